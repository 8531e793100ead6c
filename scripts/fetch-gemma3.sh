#!/usr/bin/env bash
# Fetches Gemma 3 270M into models/: the same as `scripts/fetch-model.sh gemma3` (or `make gemma`).
exec "$(dirname "$0")/fetch-model.sh" gemma3
