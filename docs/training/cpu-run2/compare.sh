#!/usr/bin/env bash
# issue 5 evidence: all models on the same 60 public cases, in one run, one thread each
set -euo pipefail
cd /work/main
BASE=$(python3 -c "from cljassist.model.locate import default_model_path; print(default_model_path())")
BASE_Q8=$(ls ~/.cache/cljassist/models/SmolLM2-135M-Instruct.Q4_1.q8_0-*.gguf | head -1)
python3 scripts/compare_models.py fixtures/bench/public.jsonl --sample 60 --no-repl --threads 1 \
  --model "smollm2-base-q4_1=$BASE" \
  --model "smollm2-base-q8_0=$BASE_Q8" \
  --model "gemma3-270m=/tmp/gemma/gemma-3-270m-q4_k_m.gguf" \
  --model "cljassist-step400=/work/cljassist-train/run2-step400.gguf" \
  --json /work/cljassist-train/compare.json --markdown /work/cljassist-train/compare.md
