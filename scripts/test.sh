#!/usr/bin/env bash
# The test command (README): everything CI checks, from a fresh Debian 12 machine.
#   1. scripts/setup.sh: lavapipe (Mesa 25 Vulkan on the CPU) when no driver is installed;
#   2. cargo test: GPU tests on the default adapter (they FAIL without one, unless
#      SBATTN_ALLOW_NO_GPU=1 asks to skip them), naga validation and translation of every
#      kernel variant, error cases, the f64 reference;
#   3. the main job (examples/quickstart) and the benchmark tool's CI profile, so both stay
#      working; the Python benchmark scripts' self-tests;
#   4. scripts/test-web.sh: the wasm32 build in headless Chromium on WebGPU and the demo page
#      end to end (SBATTN_SKIP_WEB=1 skips it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
stamp() { echo "[test] $1: $(( $(date +%s) - start )) s" >&2; }

bash scripts/setup.sh
stamp "setup"
cargo test --no-fail-fast
stamp "cargo test"
cargo run --example quickstart -- 1 4 256 64
cargo run --example bench -- --profile ci
python3 -m py_compile scripts/torch_baselines.py scripts/bench_decode.py scripts/report.py
python3 scripts/report.py --self-test
stamp "main job and tools"
if [ "${SBATTN_SKIP_WEB:-0}" != 1 ]; then
  bash scripts/test-web.sh
  stamp "web"
fi
echo "[test] all passed in $(( $(date +%s) - start )) s" >&2
