#!/usr/bin/env bash
# Puts the headers the GPU machine lacks into .gpu-deps/include, to be carried along with a device
# run (`carry: [".gpu-deps"]`): pcre2.h (the machine has the PCRE2 runtime library).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dest="$here/.gpu-deps/include"
mkdir -p "$dest"
cp /usr/include/pcre2.h "$dest/"
grep -qx "/.gpu-deps/" "$here/.git/info/exclude" 2>/dev/null || echo "/.gpu-deps/" >>"$here/.git/info/exclude"
echo "gpu-deps: $(ls "$dest" | tr '\n' ' ')"
