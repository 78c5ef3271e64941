#!/usr/bin/env bash
# The task runs behind docs/long-memory.md, exactly as they ran (on a shared 2-core machine: the adding
# runs together, then copy T = 20 and ball together, then the last two alone). Each command trains three
# cells side by side, one thread each, all stopped by the same time budget.
# Usage: run-tasks.sh RECUR OUTDIR
# (Since recur task took the shared run-directory flags, --out is an alias of --checkpoint-dir: each run
# writes a folder, curve.*, paths-<cell>.*, gradflow.* and <cell>/best|latest.safetensors, where these
# runs wrote <out>.png, <out>-paths-<cell>.png and <out>-gradflow.png.)
# (--carry-gate-bias 0 is added since its default became 3: these runs used PyTorch's initialization.)
set -euo pipefail
R=$1; O=$2
mkdir -p "$O"
common=(--cell rnn,lstm,gru --carry-gate-bias 0 --steps 1000000 --eval-every 250 --eval-size 512 --batch 32 --json)
"$R" task adding --len 100 --rnn-size 64 --lr 2e-3 --minutes 12 --out "$O/adding-100" "${common[@]}" --seed 1 > "$O/adding-100.json" 2> "$O/adding-100.log" &
"$R" task adding --len 200 --rnn-size 64 --lr 2e-3 --minutes 12 --out "$O/adding-200" "${common[@]}" --seed 1 > "$O/adding-200.json" 2> "$O/adding-200.log" &
wait
"$R" task copy --len 20 --rnn-size 64 --lr 3e-3 --minutes 10 --out "$O/copy-20" "${common[@]}" --seed 1 > "$O/copy-20.json" 2> "$O/copy-20.log" &
"$R" task ball --len 50 --rnn-size 64 --lr 3e-3 --minutes 8 --out "$O/ball-50" "${common[@]}" --seed 1 > "$O/ball-50.json" 2> "$O/ball-50.log" &
wait
# gradient flow through the trained adding models (another seed, alone on the machine)
"$R" task adding --len 100 --rnn-size 64 --lr 2e-3 --minutes 6 --gradflow 16 --out "$O/adding-100-gradflow" \
    "${common[@]}" --seed 2 > "$O/adding-100-gradflow.json" 2> "$O/adding-100-gradflow.log"
# copy at T = 100 (alone on the machine)
"$R" task copy --len 100 --rnn-size 64 --lr 3e-3 --minutes 12 --out "$O/copy-100" "${common[@]}" --seed 1 > "$O/copy-100.json" 2> "$O/copy-100.log"
