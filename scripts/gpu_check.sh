#!/usr/bin/env bash
# One prepared check of a GPU machine, in under 8 minutes on one modern GPU; everything goes to OUTDIR.
#
#   scripts/gpu_check.sh OUTDIR
#
# Steps (each under its own time limit, its log in OUTDIR/<step>.log):
#   env     versions and precision (native bf16?); every variant draws on the device, reads nothing
#           back to the host in forward or backward (CUDA sync debug mode), and is finite under fp16 and bf16 autocast
#   smoke   every variant trains a smoke run in fp32 and in AMP
#   resume  stopped and resumed == straight through, bit for bit, in deterministic mode
#   bench   the attention bench at 16K for every variant (CUDA events, peak memory)
#   oom     a case that cannot fit is recorded as oom, and the next case still runs
#   image   a train-step bench of every variant on the Image task's model
#   loader  step time with data.loader_workers 0 vs 4 (loader starvation)
# A short pass/fail summary is printed first, then the tail of each failed step's log; the same
# summary is written to OUTDIR/summary.txt. Without CUDA (or with GPU_CHECK_CPU=1) a CPU size
# runs the same steps in a few minutes.
set -uo pipefail

OUT=${1:?usage: scripts/gpu_check.sh OUTDIR}
PY=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [[ ${GPU_CHECK_CPU:-0} == 1 ]] || ! $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  export GPU_CHECK_CPU=1
  DEV=cpu
  ATTN_BENCH=(n=512 warmup=1 repeats=2 case_timeout_s=30 budget_s=150 threads=1 device=cpu quick=true)
  OOM_BENCH=(attn=softmax:impl=math,softmax n=4096 mem_limit_mb=256 warmup=0 repeats=1 threads=1 device=cpu quick=true)
  IMAGE_BENCH=(train.seq_len=256 train.batch_size=2 warmup=1 repeats=2 case_timeout_s=30 budget_s=120 threads=1 device=cpu quick=true)
  LIMIT=(env=120 smoke=420 resume=240 bench=200 oom=90 image=180 loader=240)
else
  DEV=cuda
  ATTN_BENCH=(n=16384 warmup=2 repeats=5 case_timeout_s=20 budget_s=80 device=cuda quick=true)
  OOM_BENCH=(attn=softmax:impl=math,softmax n=131072 warmup=0 repeats=1 device=cuda)  # 550 GB of scores
  IMAGE_BENCH=(train.batch_size=32 warmup=2 repeats=5 case_timeout_s=15 budget_s=40 device=cuda quick=true)
  LIMIT=(env=45 smoke=120 resume=45 bench=110 oom=40 image=60 loader=60)  # 480 s at most
fi
limit() { local kv; for kv in "${LIMIT[@]}"; do [[ ${kv%%=*} == "$1" ]] && echo "${kv#*=}"; done; }

declare -a NAMES RESULTS
START=$SECONDS
step() {  # step NAME command...: run under its own timeout, log to OUTDIR/NAME.log, record pass/fail
  local name=$1 t0=$SECONDS status
  shift
  echo "== $name ($(limit "$name") s limit)" >&2
  timeout -k 10 "$(limit "$name")" "$@" >"$OUT/$name.log" 2>&1
  status=$?
  NAMES+=("$name")
  if ((status == 0)); then RESULTS+=("PASS  $name ($((SECONDS - t0)) s)")
  elif ((status == 124 || status == 137)); then RESULTS+=("FAIL  $name: time limit $(limit "$name") s")
  else RESULTS+=("FAIL  $name: exit $status ($((SECONDS - t0)) s)"); fi
}
bench_ok() {  # bench_ok NAME CSV STATUSES...: the bench ran and every row has an expected status
  local name=$1 csv=$2
  shift 2
  "$PY" "$HERE/gpu_check.py" bench_csv "$csv" "$@" >>"$OUT/$name.log" 2>&1 || {
    RESULTS[-1]="FAIL  $name: unexpected rows (see $name.log)"
  }
}

step env "$PY" "$HERE/gpu_check.py" env "$OUT/env"
step smoke "$PY" "$HERE/gpu_check.py" smoke "$OUT/runs"
step resume "$PY" "$HERE/gpu_check.py" resume "$OUT/runs"
step bench "$PY" -m lra_bench.bench attn=all progress=false "out_dir=$OUT/bench" "${ATTN_BENCH[@]}"
bench_ok bench "$OUT/bench/attention.csv" ok oom invalid
step oom "$PY" -m lra_bench.bench progress=false plot=false skip_longer_after_failure=false "out_dir=$OUT/oom" "${OOM_BENCH[@]}"
"$PY" - "$OUT/oom/attention.csv" >>"$OUT/oom.log" 2>&1 <<'PYEOF' || RESULTS[-1]="FAIL  oom: the oversized case was not recorded as oom, or the next case failed"
import csv, sys
rows = {r["label"]: r["status"] for r in csv.DictReader(open(sys.argv[1]))}
print(rows)
sys.exit(0 if rows.get("softmax-math") == "oom" and rows.get("softmax") == "ok" else 1)
PYEOF
step image "$PY" -m lra_bench.bench mode=train_step task=image attn=all progress=false "out_dir=$OUT/bench" "${IMAGE_BENCH[@]}"
bench_ok image "$OUT/bench/train_step_image.csv" ok oom invalid
step loader "$PY" "$HERE/gpu_check.py" loader "$OUT/runs"

FAILED=0
{
  echo "gpu_check on $DEV: $(grep -c '^PASS' <(printf '%s\n' "${RESULTS[@]}")) of ${#RESULTS[@]} steps passed in $((SECONDS - START)) s; logs in $OUT"
  printf '%s\n' "${RESULTS[@]}"
} | tee "$OUT/summary.txt"
for i in "${!RESULTS[@]}"; do
  if [[ ${RESULTS[$i]} == FAIL* ]]; then
    FAILED=1
    echo "---- last lines of ${NAMES[$i]}.log"
    tail -n 15 "$OUT/${NAMES[$i]}.log"
  fi
done
exit $FAILED
