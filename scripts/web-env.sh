# Sourced by build-web.sh and test-web.sh: how to build for wasm32-unknown-unknown here.
#
# Sets WASM_CARGO (the cargo command, an array) and WASM_FLAGS (extra cargo flags), and exports
# CARGO_TARGET_DIR (target/wasm: never the shared native target/, since the Debian fallback is a
# different rustc) and WASM_BINDGEN (the wasm-bindgen CLI matching Cargo.lock), plus
# WASM_BINDGEN_VERSION.
#
# With rustup's wasm32-unknown-unknown target installed, plain `cargo` builds. Otherwise the
# Debian fallback: rustc-web + cargo-web + rust-web-src (Debian 12 security updates; 1.96 here)
# build std from source (-Zbuild-std, allowed by RUSTC_BOOTSTRAP=1) and link with rust-lld.
# SBATTN_WEB_INSTALL=1 installs missing apt packages and the wasm-bindgen CLI.

SBATTN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${SBATTN_WASM_TARGET_DIR:-$SBATTN_ROOT/target/wasm}"
SBATTN_TOOLS="$SBATTN_ROOT/target/web-tools"

web_log() { echo "[web] $*" >&2; }

# apt packages named in "$@" that are not installed yet, installed in one go.
web_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "${SBATTN_WEB_INSTALL:-0}" = 1 ] || { web_log "missing apt packages: ${missing[*]} (run scripts/test-web.sh, or apt-get install them)"; return 1; }
  web_log "apt-get install ${missing[*]}"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  if [ -z "${SBATTN_APT_UPDATED:-}" ]; then
    "${sudo[@]}" apt-get update -qq
    SBATTN_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  WASM_CARGO=(cargo)
  WASM_FLAGS=()
  web_log "toolchain: rustup's wasm32-unknown-unknown target"
else
  web_apt rustc-web cargo-web rust-web-src || return 1
  export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
  if [ -x /usr/bin/rust-lld ]; then
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=/usr/bin/rust-lld
  else
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
  fi
  WASM_CARGO=(/usr/bin/cargo)
  WASM_FLAGS=(-Zbuild-std=std,panic_abort)
  web_log "toolchain: Debian fallback, $(/usr/bin/rustc --version) with -Zbuild-std"
fi

# The wasm-bindgen version both crates lock (the CLI must match it exactly).
WASM_BINDGEN_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$SBATTN_ROOT/Cargo.lock")"
export WASM_BINDGEN_VERSION
demo_lock="$SBATTN_ROOT/examples/web-demo/Cargo.lock"
if [ -f "$demo_lock" ]; then
  demo_version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$demo_lock")"
  if [ "$demo_version" != "$WASM_BINDGEN_VERSION" ]; then
    web_log "wasm-bindgen $demo_version in examples/web-demo/Cargo.lock but $WASM_BINDGEN_VERSION in Cargo.lock: pin the same"
    return 1
  fi
fi

# The CLI (wasm-bindgen, wasm-bindgen-test-runner) at that version, in target/web-tools/bin.
export WASM_BINDGEN="$SBATTN_TOOLS/bin/wasm-bindgen"
if [ "$("$WASM_BINDGEN" --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
  if [ "${SBATTN_WEB_INSTALL:-0}" != 1 ]; then
    web_log "no wasm-bindgen $WASM_BINDGEN_VERSION in $SBATTN_TOOLS/bin (scripts/test-web.sh installs it)"
    return 1
  fi
  command -v cc >/dev/null || web_apt gcc libc6-dev || return 1   # ring, in the CLI, builds C
  web_log "cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION (a few minutes)"
  # Native build with the native toolchain, its own target dir. --debug: 3 CPU-minutes instead of
  # 7.5 here, and the debug CLI still processes the demo in 1 s and the test wasm in a few.
  env -u RUSTC -u RUSTC_BOOTSTRAP CARGO_TARGET_DIR="$SBATTN_TOOLS/build" \
    cargo install --quiet --force --debug wasm-bindgen-cli --version "=$WASM_BINDGEN_VERSION" --root "$SBATTN_TOOLS" || return 1
fi
