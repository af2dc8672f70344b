#!/usr/bin/env bash
# Install everything, then run the linter and the whole test suite (real offline model included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check src tests bench scripts
.venv/bin/python -m pytest -q --durations=15 "$@"
