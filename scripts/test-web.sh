#!/usr/bin/env bash
# The browser tests, from a fresh Debian 12 machine: installs what is missing (Chromium,
# chromedriver, Node, the wasm32 toolchain fallback, wasm-bindgen-cli at the Cargo.lock
# version; each step is skipped when already done), then
#   1. runs tests/web.rs (wasm-bindgen-test) in headless Chromium on WebGPU (SwiftShader here),
#   2. builds the demo site (scripts/build-web.sh) into target/web-demo-site/,
#   3. serves it on 127.0.0.1 and runs the end-to-end test of the page (scripts/web-e2e.mjs),
#      saving target/web-demo-site/screenshot.png.
# Exits non-zero on any failure. Nothing outside the repo is cached: target/wasm and
# target/web-tools are rebuilt on a fresh machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
stamp() { echo "[web] $1: $(( $(date +%s) - start )) s since start" >&2; }

export SBATTN_WEB_INSTALL=1
source scripts/web-env.sh
web_apt chromium chromium-driver ca-certificates
command -v node >/dev/null || web_apt nodejs
stamp "tools ready"

# 1. wasm-bindgen-test in headless Chromium. webdriver.json (crate root) adds the WebGPU flags.
# --release: the root dev profile builds proc macros at opt-level 3 (package."*"; wasm-bindgen's
# macro support alone took over 4 CPU-minutes here, the whole release test build about 3), and
# release also speeds up the f64 reference.
export CHROMEDRIVER=/usr/bin/chromedriver
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$SBATTN_TOOLS/bin/wasm-bindgen-test-runner"
export WASM_BINDGEN_TEST_TIMEOUT=180
"${WASM_CARGO[@]}" test --release --target wasm32-unknown-unknown --test web "${WASM_FLAGS[@]}" -- --nocapture
stamp "wasm-bindgen-test suite passed"

# 2. The site.
bash scripts/build-web.sh
stamp "site built"

# 3. The page end to end.
node scripts/web-e2e.mjs target/web-demo-site target/web-demo-site/screenshot.png
stamp "end-to-end test passed"
