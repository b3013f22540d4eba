#!/usr/bin/env bash
# Builds app.py into {{name}}.wasm with the Weir SDK this project was made
# with: bash build.sh
set -euo pipefail
cd "$(dirname "$0")"
exec bash "{{sdk}}/python/build.sh" . app {{name}}.wasm "$@"
