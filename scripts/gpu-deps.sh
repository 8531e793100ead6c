#!/usr/bin/env bash
# Puts the headers the GPU machine lacks into .gpu-deps/include, to be carried along with a device
# run (`carry: [".gpu-deps"]`): pcre2.h (the machine has the PCRE2 runtime library) and the
# header-only cpp-httplib (Debian's package ships a split header plus a shared library; the
# single header comes from the same version's source tarball in Debian's archive).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dest="$here/.gpu-deps/include"
mkdir -p "$dest"
cp /usr/include/pcre2.h "$dest/"
if [ ! -f "$dest/httplib.h" ]; then
  version="$(dpkg-query -W -f='${Version}' libcpp-httplib-dev | sed 's/-[^-]*$//')"
  tmp="$(mktemp -d)"
  curl -sSfL -o "$tmp/src.tar.xz" \
    "http://deb.debian.org/debian/pool/main/c/cpp-httplib/cpp-httplib_${version}.orig.tar.xz"
  tar -xf "$tmp/src.tar.xz" -C "$tmp" --wildcards '*/httplib.h'
  cp "$tmp"/*/httplib.h "$dest/httplib.h"
  rm -rf "$tmp"
fi
grep -qx "/.gpu-deps/" "$here/.git/info/exclude" 2>/dev/null || echo "/.gpu-deps/" >>"$here/.git/info/exclude"
echo "gpu-deps: $(ls "$dest" | tr '\n' ' ')"
