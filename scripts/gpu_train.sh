#!/usr/bin/env bash
# The GPU machine's side of the training run (docs/training/gpu_run.md; the calls are written by
# `cljassist train gpu-prep` into $GPU_DIR/PLAN.md).
#
#   GPU_DIR=.gpu bash scripts/gpu_train.sh receive   # check the base pieces this call brought
#   GPU_DIR=.gpu TRAIN_MINUTES=6.5 bash scripts/gpu_train.sh train
#
# `train` puts the base GGUF together (checked against its sha256), installs the carried wheels,
# trains the LoRA adapter on the token bundle (checkpoints in $GPU_DIR/run, loss and validation
# loss printed; run again it resumes), exports it as a llama.cpp LoRA GGUF and leaves it in $OUT
# in pieces under 16 MiB, with adapter.json, curve.jsonl, steps.jsonl, the log and SHA256SUMS.
# Everything it needs is in the working tree: the machine has no network.
#
# Settings (environment): GPU_DIR (.gpu), TRAIN_MINUTES (6.5: model load included), MAX_STEPS
# (the cosine schedule's length, 0: one epoch), BATCH_TOKENS (16384 a micro-batch), GRAD_ACCUM (2),
# MAX_LEN (from the bundle),
# LR (2e-4), RANK (16), EVAL_EVERY / SAVE_EVERY (50), DEVICE (auto), BASE_FILE (where the base is put
# together: /tmp/cljassist-base.gguf), EXTRA_FIT_ARGS.
set -euo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
GPU_DIR=${GPU_DIR:-.gpu}
OUT=${OUT:?OUT must name the folder whose files come back}
step=${1:?usage: gpu_train.sh receive|train}
PY=${PYTHON:-python3}

if [ -d "$GPU_DIR/whl" ] && ls "$GPU_DIR"/whl/*.whl >/dev/null 2>&1; then
  site=${SITE_DIR:-/tmp/cljassist-site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$GPU_DIR"/whl/*.whl
  export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

"$PY" -m cljassist.train.gpu receive "$GPU_DIR"
[ "$step" = receive ] && exit 0
[ "$step" = train ] || { echo "gpu_train.sh: unknown step $step" >&2; exit 2; }

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
base=${BASE_FILE:-/tmp/cljassist-base.gguf}
[ -f "$base" ] || "$PY" -m cljassist.train.gpu assemble "$GPU_DIR" "$base"
max_len=${MAX_LEN:-$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["max_len"])' "$GPU_DIR/data/bundle.json")}
run="$GPU_DIR/run"
resume=()
[ -d "$run/checkpoints" ] && resume=(--resume)
mkdir -p "$run"
set +e
"$PY" -m cljassist.train.cli fit "$GPU_DIR/data" "$run" --base "$base" --max-len "$max_len" \
  --batch-tokens "${BATCH_TOKENS:-16384}" --grad-accum "${GRAD_ACCUM:-2}" --lr "${LR:-2e-4}" --rank "${RANK:-16}" --alpha "$((2 * ${RANK:-16}))" \
  --max-steps "${MAX_STEPS:-0}" --max-minutes "${TRAIN_MINUTES:-6.5}" \
  --eval-every "${EVAL_EVERY:-50}" --save-every "${SAVE_EVERY:-50}" --log-every "${LOG_EVERY:-10}" \
  --device "${DEVICE:-auto}" "${resume[@]}" ${EXTRA_FIT_ARGS:-} 2>&1 | tee "$run/train.log"
fit_status=${PIPESTATUS[0]}
set -e
[ -f "$run/adapter.npz" ] || { echo "gpu_train.sh: no adapter (fit exited $fit_status)" >&2; exit 1; }
lora="$run/adapter.lora.gguf"
"$PY" -m cljassist.train.cli export-lora "$run" "$lora" --base "$base"
files=("$lora" "$run/adapter.json" "$run/train.log")
for f in curve.jsonl steps.jsonl; do [ -f "$run/$f" ] && files+=("$run/$f"); done
"$PY" -m cljassist.train.gpu leave "$OUT" "${files[@]}"
exit "$fit_status"
