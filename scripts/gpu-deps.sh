#!/usr/bin/env bash
# Puts the headers the GPU machine lacks (pcre2.h) into .gpu-deps/include, to be carried along with
# a device run (`carry: [".gpu-deps"]`); the machine has the PCRE2 runtime library itself.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$here/.gpu-deps/include"
cp /usr/include/pcre2.h "$here/.gpu-deps/include/"
grep -qx "/.gpu-deps/" "$here/.git/info/exclude" 2>/dev/null || echo "/.gpu-deps/" >>"$here/.git/info/exclude"
echo "gpu-deps: .gpu-deps/include/pcre2.h"
