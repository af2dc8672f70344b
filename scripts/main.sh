#!/usr/bin/env bash
# Install everything, then run the main job: the `quick` study on the embedded defaults
# (gemma-3-270m on crowd-enVENT; the shared copy beside this clone is used when present).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -z "${EMOLENS_CROWD_ENVENT:-}" ] && [ -f ../shared/data/crowd-enVENT/enVent_gen_Data.csv ]; then
  export EMOLENS_CROWD_ENVENT="$PWD/../shared/data/crowd-enVENT"
fi
.venv/bin/emolens run "$@"
