#!/usr/bin/env bash
# Installs what lserve needs on Debian/Ubuntu: build tools and libraries from apt, and a Python
# venv (.venv) with the packages the scripts and tests use. Idempotent: only missing pieces are
# installed. `setup.sh --fuzz` also installs clang, libFuzzer and llvm-symbolizer (make fuzz,
# make sanitize-unit).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

packages=(build-essential cmake ninja-build pkg-config git nlohmann-json3-dev libcli11-dev
  libspdlog-dev libfmt-dev libpcre2-dev libopenblas-dev libgtest-dev
  libbenchmark-dev python3 python3-venv python3-pip curl)
if [ "${1:-}" = "--fuzz" ]; then
  packages+=(clang libclang-rt-dev llvm)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

venv="$here/.venv"
req="$here/scripts/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating the Python venv in .venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet -r "$req"
  echo "$want" >"$stamp"
fi
echo "setup: ok"
