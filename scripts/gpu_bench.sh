#!/usr/bin/env bash
# Attention bench (1K-16K, every registered variant + softmax impl=math + the plain reference
# form of the variants with a fast path) and a train-step bench per task on one GPU, in under
# 8 minutes; CSV, Markdown and plot files go to OUTDIR. Times come from CUDA events, memory from
# max_memory_allocated, and every table has the bytes saved for backward.
#
#   scripts/gpu_bench.sh OUTDIR [bench overrides...]
#
# Without a GPU it runs a small CPU configuration (lengths 256 and 512, two repeats) that checks
# the wiring. BENCH_SIZE=gpu|cpu|tiny forces a size (tiny: seconds, three attentions, for tests);
# BENCH_ATTN=softmax,skyformer limits the attentions (default: all + references). Every case has a time limit
# and every bench a budget; a CSV is rewritten after each case, so a cut run keeps its rows.
set -uo pipefail

OUT=${1:?usage: scripts/gpu_bench.sh OUTDIR [bench overrides...]}
shift
PY=${PYTHON:-python}
SIZE=${BENCH_SIZE:-auto}
if [[ $SIZE == auto ]]; then
  if $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then SIZE=gpu; else SIZE=cpu; fi
fi

TASKS=(listops text retrieval image pathfinder)
REFERENCES=skyformer:impl=reference,nystromformer:impl=reference,performer:impl=reference
FULL="all,$REFERENCES"
LAST_START=400  # no new bench after this many seconds
ATTN_LIMIT=300  # seconds before the attention bench is stopped (it still writes its tables and plot)
STEP_LIMIT=150  # the same for each train-step bench
case $SIZE in
  gpu)  # attention <= 210 s (80 cases; the budget leaves room for the slow 16K cases of the last
        # variants, sparse and synthesizer, and a worker restart or two), five train-step benches
        # <= 30 s each, start-up ~10 s per bench: ~7.5 minutes at most
    ATTN=${BENCH_ATTN:-$FULL}  # the reference forms last: a tight budget skips them first
    BENCH=(n=1024,2048,4096,8192,16384 warmup=2 repeats=5 case_timeout_s=15 budget_s=210 device=cuda quick=true)
    STEP=(warmup=2 repeats=5 case_timeout_s=10 budget_s=30 device=cuda quick=true)
    ATTN_LIMIT=240
    STEP_LIMIT=60
    ;;
  cpu)
    ATTN=${BENCH_ATTN:-$FULL}
    BENCH=(n=256,512 warmup=1 repeats=2 case_timeout_s=60 budget_s=240 device=cpu quick=true)
    STEP=(train.seq_len=256 train.batch_size=2 warmup=1 repeats=2 case_timeout_s=60 budget_s=60 device=cpu quick=true)
    LAST_START=100000
    ;;
  tiny)
    ATTN=${BENCH_ATTN:-softmax,skyformer,skyformer:impl=reference}
    BENCH=(n=128 warmup=1 repeats=1 isolate=none progress=false device=cpu quick=true)
    STEP=(train.seq_len=128 train.batch_size=2 warmup=0 repeats=1 isolate=none progress=false device=cpu quick=true)
    TASKS=(listops)
    ;;
  *) echo "BENCH_SIZE must be gpu, cpu or tiny (got $SIZE)" >&2; exit 2 ;;
esac

mkdir -p "$OUT"
START=$SECONDS
FAILED=0
bench() {  # bench SECONDS_LIMIT overrides...: one bench command, its failure noted, not fatal
  local limit=$1
  shift
  timeout -k 15 "$limit" "$PY" -m lra_bench.bench "$@" "out_dir=$OUT" ${EXTRA[@]+"${EXTRA[@]}"} || {
    echo "== exited with status $?: $*" >&2
    FAILED=1
  }
}
EXTRA=("$@")

echo "== attention bench ($SIZE) -> $OUT/attention.csv"
bench "$ATTN_LIMIT" "attn=$ATTN" "${BENCH[@]}"
for task in "${TASKS[@]}"; do
  if (( SECONDS - START > LAST_START )); then
    echo "== out of time: no train-step bench for $task" >&2
    continue
  fi
  echo "== train-step bench: $task -> $OUT/train_step_$task.csv"
  bench "$STEP_LIMIT" mode=train_step "task=$task" "attn=$ATTN" "${STEP[@]}"
done
echo "== done in $((SECONDS - START)) s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $FAILED
