#!/usr/bin/env bash
# Makes sure a Vulkan driver is there for wgpu. On a machine without a GPU driver (Debian 12,
# as CI), installs Mesa 25's lavapipe (Vulkan on the CPU) from bookworm-backports: Debian's own
# Mesa 22 lacks shaderFloat16, which the f16 kernels need. Idempotent; needs root or sudo only
# when it installs something. Set SBATTN_SKIP_SETUP=1 to skip (a machine with its own driver).
set -euo pipefail
[ "${SBATTN_SKIP_SETUP:-0}" = 1 ] && exit 0
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)

installed() { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null | grep -q "install ok installed"; }
mesa_version() { dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true; }

if [ -f /etc/debian_version ]; then
  need=0
  installed libvulkan1 || need=1
  case "$(mesa_version)" in
    2[5-9].*|[3-9][0-9].*) ;;                 # Mesa 25 or later: has shaderFloat16
    *) need=1 ;;
  esac
  if [ "$need" = 1 ]; then
    echo "[setup] installing lavapipe (Mesa from bookworm-backports) and the Vulkan loader" >&2
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo 'deb http://deb.debian.org/debian bookworm-backports main' | "${sudo[@]}" tee /etc/apt/sources.list.d/bpo.list >/dev/null
    fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq -t bookworm-backports \
      mesa-vulkan-drivers libvulkan1 >/dev/null
  fi
  echo "[setup] Vulkan: libvulkan1 $(dpkg-query -W -f='${Version}' libvulkan1), mesa-vulkan-drivers $(mesa_version)" >&2
else
  echo "[setup] not Debian: install a Vulkan driver yourself (or Metal/DX12 on macOS/Windows)" >&2
fi
