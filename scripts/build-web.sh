#!/usr/bin/env bash
# Builds the browser demo (examples/web-demo) into a static site: target/web-demo-site/
# (index.html, main.js, pkg/ from wasm-bindgen). Serve it over http on localhost, e.g.
#
#   bash scripts/build-web.sh
#   python3 -m http.server 8000 --bind 127.0.0.1 --directory target/web-demo-site
#   # then open http://127.0.0.1:8000/ in a browser with WebGPU
#
# Uses rustup's wasm32-unknown-unknown target where installed, else Debian's rustc-web with
# -Zbuild-std (scripts/web-env.sh). SBATTN_WEB_INSTALL=1 installs what is missing (apt
# packages, wasm-bindgen-cli); SITE=dir overrides the output folder.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/web-env.sh
site="${SITE:-target/web-demo-site}"

web_log "building examples/web-demo (release, wasm32)"
(cd examples/web-demo && "${WASM_CARGO[@]}" build --release --target wasm32-unknown-unknown "${WASM_FLAGS[@]}")
rm -rf "$site"
mkdir -p "$site"
"$WASM_BINDGEN" --target web --no-typescript --out-dir "$site/pkg" \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/sbattn_web_demo.wasm"
cp examples/web-demo/www/* "$site/"
web_log "site ready: $site ($(du -sh "$site" | cut -f1); wasm $(du -h "$site/pkg/sbattn_web_demo_bg.wasm" | cut -f1))"
