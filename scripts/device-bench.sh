#!/usr/bin/env bash
# The H200 benchmark in one call. Prepare here with `bash scripts/prepare-device.sh`, then run on
# the GPU machine, from the repository root, with carry [".device"]:
#
#   bash scripts/device-bench.sh
#
# Steps (each under a time limit; STEPS="tests f16 ..." picks a subset, default all, which can
# exceed one 10-minute call: split it over two):
#   tests      the GPU test binaries (forward, decode, coop, backward, serving) on this GPU
#   f16        ours, default sweep, every path, f16, random inputs, eps 0
#   checks     ours at B4 H12 T4096/8192 D128, every path, f16, with all of wgpu's runtime
#              checks (full) and with none (unchecked); the default keeps index clamping
#   decode     sbattn bench decode and scripts/bench_decode.py (PyTorch decode step)
#   f32        ours, default sweep, portable paths only (subgroup, shared), f32
#   eps        ours at B4 H12 T4096 D128, every path, f16, eps 0 and $EPS, random and long-range
#   torch      PyTorch baselines (SDPA bf16/f16/f32, eager stick-breaking bf16/f16)
#   backward   sbattn bench backward: forward, backward, both, every path, f16
#   prefill    sbattn bench prefill: one call, chunks on contiguous and paged caches, varlen
#   paged      sbattn bench decode on paged caches (pages of 16 and 128 tokens)
# then scripts/report.py: the markdown table for BENCHMARKS.md, printed last.
# Files under $OUT (at most 8 come back): ours-*.json torch.json decode.json torch_decode.json report.md
# device-bench.log.
# Environment: OUT (default /tmp/sbattn-bench), EPS (default 1e-3), PYTHON (default python3),
# SBATTN (default .device/sbattn), EXTRA (more options for every forward bench call, e.g. "--iters 20"; a
# later option wins, so EXTRA="--shapes 1x2x128x64" shrinks every step), TORCH_EXTRA (more options
# for torch_baselines.py), DECODE_EXTRA (more options for the decode bench call, e.g. "--profile quick"),
# VK_ENV=none (skip vk-env.sh: a dry run on lavapipe here).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-/tmp/sbattn-bench}"
EPS="${EPS:-1e-3}"
PYTHON="${PYTHON:-python3}"
SBATTN="${SBATTN:-.device/sbattn}"
EXTRA="${EXTRA:-}"
TORCH_EXTRA="${TORCH_EXTRA:-}"
DECODE_EXTRA="${DECODE_EXTRA:-}"
mkdir -p "$OUT"
log="$OUT/device-bench.log"
: > "$log"

if [ "${VK_ENV:-}" != none ]; then
  # shellcheck disable=SC1091
  source ../shared/device/vk-env.sh 2>/dev/null || source .device/vk-env.sh
fi

step() { # step SECONDS NAME COMMAND...: runs with a limit, logs everything, never stops the script
  local limit="$1" name="$2"; shift 2
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$log"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >> "$log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$log"
  [ "$rc" = 124 ] && echo "    (timed out: the JSON holds what finished)" | tee -a "$log"
  return 0
}

{
  echo "commit: $(cat .device/commit 2>/dev/null | head -1)"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw,utilization.gpu,memory.used \
    --format=csv 2>&1 || true
} >> "$log"

common=(--time-limit 3 --iters 10 --warmup 3)
STEPS="${STEPS:-tests f16 checks f32 eps torch decode backward prefill paged}"
has() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
# shellcheck disable=SC2086
has f16 && step 150 "ours f16" "$SBATTN" bench forward --profile default --paths all --dtypes f16 "${common[@]}" $EXTRA --json "$OUT/ours-f16.json"
if has checks; then
  for c in default unchecked full; do
    # shellcheck disable=SC2086
    step 60 "ours f16 checks=$c" "$SBATTN" bench forward --shapes 4x12x4096x128,4x12x8192x128 --paths all --dtypes f16 \
      --checks $c "${common[@]}" $EXTRA --json "$OUT/ours-$c.json"
  done
fi
# shellcheck disable=SC2086
has f32 && step 90 "ours f32" "$SBATTN" bench forward --profile default --paths subgroup,shared --dtypes f32 "${common[@]}" $EXTRA --json "$OUT/ours-f32.json"
# shellcheck disable=SC2086
has eps && step 60 "ours eps" "$SBATTN" bench forward --shapes 4x12x4096x128 --paths all --dtypes f16 --eps "0,$EPS" --inputs random,long-range \
  "${common[@]}" $EXTRA --json "$OUT/ours-eps.json"
# shellcheck disable=SC2086
has torch && step 100 "torch baselines" "$PYTHON" scripts/torch_baselines.py "$OUT/torch.json" --time-limit 3 $TORCH_EXTRA
if has decode; then
  # shellcheck disable=SC2086
  step 120 "ours decode" "$SBATTN" bench decode --time-limit 3 $DECODE_EXTRA --json "$OUT/decode.json"
  step 120 "torch decode" "$PYTHON" scripts/bench_decode.py --json "$OUT/torch_decode.json" --iters 30
fi
# shellcheck disable=SC2086
has backward && step 150 "ours backward" "$SBATTN" bench backward --paths all --dtypes f16 "${common[@]}" $EXTRA --json "$OUT/backward.json"
has prefill && step 120 "ours prefill" "$SBATTN" bench prefill "${common[@]}" --json "$OUT/prefill.json"
if has paged; then
  for p in 16 128; do
    step 90 "ours decode paged $p" "$SBATTN" bench decode --batch-sizes 8 --lengths 32768,131072 --page-size $p --time-limit 3 \
      --json "$OUT/decode-paged-$p.json"
  done
fi
if has tests; then
  # Correctness on this GPU, every path it has (the tensor-core path only runs here), with the
  # long grids (SBATTN_FULL_TESTS=1: what CI on lavapipe leaves out).
  export SBATTN_FULL_TESTS=1
  step 120 "test forward" .device/test-forward --test-threads 8
  step 60 "test decode" .device/test-decode --test-threads 8
  step 60 "test coop" .device/test-coop --test-threads 8
  step 120 "test backward" .device/test-backward --test-threads 8
  step 120 "test serving" .device/test-serving --test-threads 8
  step 60 "quickstart" .device/quickstart
fi
ours=()
for f in f16 default full unchecked f32 eps; do [ -f "$OUT/ours-$f.json" ] && ours+=("$OUT/ours-$f.json"); done
torch=()
[ -f "$OUT/torch.json" ] && torch=(--torch "$OUT/torch.json")
step 20 "report" "$PYTHON" scripts/report.py --ours "${ours[@]}" "${torch[@]}" --out "$OUT/report.md"

rm -f "$OUT"/*.tmp
echo
grep -m1 "^adapter:" "$log" | cut -c1-200
grep -E "^(=== .*exit|    \(timed out)" "$log"
echo
cat "$OUT/report.md" 2>/dev/null || { echo "no report; end of log:"; tail -40 "$log"; }
