#!/usr/bin/env bash
# The tensor-core kernel's key tile, on the GPU machine (after scripts/prepare-device.sh, with
# carry [".device"]): times the kernel at B4 H12 T4096 D128 f16 with each key tile of
# ForwardTuning::coop_block_n (`sbattn bench forward --coop-block-n`), checked against the
# reference, and writes the bench JSON under $OUT/profile/. (The stage-skipping variants of the
# old examples/bench.rs, SBATTN_PROFILE_SKIP, are no longer in the library.)
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-/tmp/sbattn-profile}"
SHAPE="${SHAPE:-4x12x4096x128}"
mkdir -p "$OUT/profile"
[ "${VK_ENV:-}" = none ] || source .device/vk-env.sh
json="$OUT/profile/coop-block-n.json"
timeout 120 .device/sbattn bench forward --shapes "$SHAPE" --paths coop --dtypes f16 --coop-block-n auto,32,64 \
  --iters 10 --time-limit 2 --json "$json" > "$OUT/profile/coop-block-n.log" 2>&1
python3 - "$json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("variant | median ms | min ms | spread | check")
for r in d.get("results", []):
    check = r.get("check") or {}
    print(f"block_n {r.get('coop_block_n') or 'auto'} | {r.get('median_ms')} | {r.get('min_ms')} | {r.get('spread')} "
          f"| {'pass' if check.get('pass') else check}")
PY
