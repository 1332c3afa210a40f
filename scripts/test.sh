#!/usr/bin/env bash
# The test command (README): everything CI checks, from a fresh Debian 12 machine.
#   1. scripts/setup.sh: lavapipe (Mesa 25 Vulkan on the CPU) when no driver is installed;
#   2. cargo test: GPU tests on the default adapter (they FAIL without one, unless
#      SBATTN_ALLOW_NO_GPU=1 asks to skip them), naga validation and translation of every
#      kernel variant, error cases, the f64 reference; clippy (warnings as errors) and the
#      library's docs (rustdoc warnings as errors);
#   3. the main job (examples/quickstart), the multi-turn chat example (every row checked
#      against the reference) and the `sbattn` command (cli/): its tests (no GPU),
#      `sbattn check --quick` (every kernel path against the reference) and the forward
#      benchmark's CI profile with its JSON and PNG plot checked, so all stay working; the
#      Python benchmark scripts' self-tests;
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
# Lints and docs of every crate and target, warnings as errors.
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p sbattn
stamp "clippy and docs"
cargo run --example quickstart -- 1 4 256 64
cargo run --example chat -- --decode 4
cargo test -p sbattn-cli
cargo build -p sbattn-cli
sbattn="$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug/sbattn"
"$sbattn" info
"$sbattn" check --quick
out="$(mktemp -d)"
"$sbattn" bench forward --profile ci --plot "$out/forward.png" --json "$out/forward.json"
# The plot must be a real PNG of the size the tool draws, and the JSON complete with results.
python3 - "$out/forward.png" "$out/forward.json" <<'PY'
import json, struct, sys
png = open(sys.argv[1], "rb").read()
assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR", "not a PNG"
width, height = struct.unpack(">II", png[16:24])
assert (width, height) == (1600, 700) and len(png) > 20000, (width, height, len(png))
doc = json.load(open(sys.argv[2]))
assert doc["complete"] and doc["results"], "incomplete JSON"
assert all(r["check"]["pass"] for r in doc["results"]), "a correctness check failed"
print(f"plot {width}x{height} ({len(png)} bytes), {len(doc['results'])} results")
PY
rm -rf "$out"
python3 -m py_compile scripts/torch_baselines.py scripts/bench_decode.py scripts/report.py
python3 scripts/report.py --self-test
stamp "main job and tools"
if [ "${SBATTN_SKIP_WEB:-0}" != 1 ]; then
  bash scripts/test-web.sh
  stamp "web"
fi
echo "[test] all passed in $(( $(date +%s) - start )) s" >&2
