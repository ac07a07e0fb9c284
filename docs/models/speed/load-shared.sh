#!/bin/bash
# 16 clients over 4 files that share their buffers (scripts/load_test.py --shared-buffers), per model
export PYTHONPATH=$PWD
OUT=${OUT:-docs/models/speed/runs}
for M in smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b; do
  echo "=== $M shared load $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a $OUT/log.txt
  python3 scripts/load_test.py --dir /tmp/load-proj --buffers 4 --shared-buffers --clients 16 --seconds 60 \
     --model $M --threads 2 --no-repl --json $OUT/load-shared-$M.json > $OUT/load-shared-$M.txt 2>&1
  echo "=== $M shared done $(date -u +%T) rc=$?" | tee -a $OUT/log.txt
done
