#!/usr/bin/env bash
# Builds what scripts/device-bench.sh runs on the GPU machine and puts it in .device/ (git-ignored,
# carried with `carry: [".device"]`): the release `sbattn` command (cli/: info, check, bench
# forward, bench decode) and the quickstart example, the GPU test binaries
# (forward, decode, coop, backward, serving: run there, they test the paths lavapipe lacks,
# such as the cooperative-matrix kernel), vk-env.sh and the Vulkan loader from ../shared/device (the
# GPU machine has no Rust toolchain and no Vulkan loader).
#
#   bash scripts/prepare-device.sh            # then: run with carry [".device"]:
#                                             #   bash scripts/device-bench.sh
# SHARED=/path/to/shared overrides where shared/ is (default: ../shared beside the repo).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
shared="${SHARED:-../shared}"
cargo build --release -p sbattn-cli --bin sbattn
cargo build --release -p sbattn-tools --bin coop-probe
cargo build --release --example quickstart
tests=(forward decode coop backward serving)
cargo test --release --no-run $(printf -- '--test %s ' "${tests[@]}") --message-format=json \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["test"] and m.get("executable"):
        print(m["target"]["name"], m["executable"])' > /tmp/sbattn-test-bins
target="$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
mkdir -p .device
rm -f .device/test-*
cp -f "$target/release/sbattn" .device/sbattn
cp -f "$target/release/coop-probe" .device/coop-probe
cp -f "$target/release/examples/quickstart" .device/quickstart
while read -r name exe; do cp -f "$exe" ".device/test-$name"; done < /tmp/sbattn-test-bins
# Symbols off: the carry limit is 64 MiB.
strip .device/sbattn .device/coop-probe .device/quickstart .device/test-* 2>/dev/null || true
cp -f "$shared/device/vk-env.sh" "$shared/device/libvulkan.so.1" .device/
# flash-linear-attention's stick-breaking kernel (the packaged peer baseline), as a wheel: the
# GPU machine reaches no registry (its einops is already there).
[ -f .device/whl/fla_core-0.6.0-py3-none-any.whl ] || python3 -m pip download -q --no-deps fla-core==0.6.0 -d .device/whl
git rev-parse HEAD > .device/commit 2>/dev/null || true
git status --short -- src shaders examples cli >> .device/commit 2>/dev/null || true
ls -l .device/
.device/sbattn --help > /dev/null && echo "prepare-device: .device/ ready ($(du -sh .device | cut -f1))"
