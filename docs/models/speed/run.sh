#!/bin/bash
# The speed figures of docs/models/speed/README.md: every figure per model, one run each (run in the repository root)
set -u
export PYTHONPATH=$PWD
OUT=${OUT:-docs/models/speed/runs}
CP="$(python3 scripts/bench_classpath.py)"
mkdir -p /tmp/bench-repl
python3 -m cljassist nrepl /tmp/bench-repl --classpath "$CP" > $OUT/nrepl.log 2>&1 &
NREPL_PID=$!
for i in $(seq 60); do [ -s /tmp/bench-repl/.nrepl-port ] && break; sleep 1; done
PORT=$(cat /tmp/bench-repl/.nrepl-port)
for M in ${MODELS:-smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b}; do
  echo "=== $M typing $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a $OUT/log.txt
  python3 -m cljassist bench --typing-bench-files 4 --forms 2 --naive-every 16 --model $M --threads 2 \
     --load-ns --nrepl 127.0.0.1:$PORT --json $OUT/typing-$M.json > $OUT/typing-$M.txt 2>&1
  echo "=== $M one-shot $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a $OUT/log.txt
  python3 -m cljassist bench fixtures/bench/public.jsonl --sample 20 --model $M --threads 2 \
     --nrepl 127.0.0.1:$PORT --json $OUT/oneshot-$M.json > $OUT/oneshot-$M.txt 2>&1
  echo "=== $M load $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a $OUT/log.txt
  python3 scripts/load_test.py --dir /tmp/load-proj --buffers 4 --clients 16 --seconds 60 --model $M \
     --threads 2 --no-repl --json $OUT/load-$M.json > $OUT/load-$M.txt 2>&1
  echo "=== $M done $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg) rc=$?" | tee -a $OUT/log.txt
done
kill $NREPL_PID
