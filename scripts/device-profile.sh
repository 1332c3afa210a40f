#!/usr/bin/env bash
# Where the tensor-core kernel's time goes, on the GPU machine (after scripts/prepare-device.sh,
# with carry [".device"]): times the kernel at B4 H12 T4096 D128 f16 with one stage left out at
# a time (SBATTN_PROFILE_SKIP: 1 = S = Q K^T, 2 = the scan, 4 = O += P V; results are wrong on
# purpose) and with each key tile (SBATTN_COOP_BLOCK_N). Prints one line per variant and
# writes the bench JSON of each under $OUT/profile/.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-/tmp/sbattn-profile}"
SHAPE="${SHAPE:-4x12x4096x128}"
mkdir -p "$OUT/profile"
[ "${VK_ENV:-}" = none ] || source .device/vk-env.sh
echo "variant | median ms | min ms"
for cfg in "64 0" "32 0" "64 1" "64 2" "64 4" "64 3" "64 6" "64 5" "64 7" "32 2" "32 4"; do
  set -- $cfg
  json="$OUT/profile/bn$1-skip$2.json"
  check=200
  [ "$2" = 0 ] || check=0
  SBATTN_COOP_BLOCK_N=$1 SBATTN_PROFILE_SKIP=$2 timeout 60 .device/bench --shapes "$SHAPE" --paths coop --dtypes f16 \
    --check-t $check --iters 10 --time-limit 2 --json "$json" > "$OUT/profile/bn$1-skip$2.log" 2>&1
  python3 - "$json" "$1" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for r in d.get("results", []):
    print(f"block_n {sys.argv[2]} skip {sys.argv[3]} | {r.get('median_ms')} | {r.get('min_ms')} | check {r.get('check')}")
PY
done
