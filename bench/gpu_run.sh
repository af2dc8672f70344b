#!/usr/bin/env bash
# The prepared GPU command for issue 14: every paper-preset stage on the 8B shape, on a host that has
# only torch and transformers (the device machines of docs/gpu.md). Run from the repository root:
#
#   bash bench/gpu_run.sh            # results and logs under $OUT (default ./gpu-out)
#
# What it expects beside the checkout (git-ignored, carried to the host):
#   .whl/                 wheels of what the host lacks (pydantic, pydantic-core, annotated-types,
#                         typing-inspection, typing-extensions), installed into /tmp/site;
#   .gpu/tok/             gemma-3-270m's tokenizer.json + tokenizer_config.json (real token counts);
#   .gpu/data/crowd-enVENT/  the corpus (never committed).
#
# The stages run in three parts, each a fresh process under its own time limit (SIGINT, so the
# study stops cleanly and the table of the stages that finished still prints): a slow stage cannot
# take the other parts' numbers with it.
# GPU_TINY=1 runs every part at gpu_protocol's --tiny sizes: the CPU check of this script.
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
if [ -d .whl ] && ! python3 -c "import pydantic" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore \
    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
[ -d .gpu/tok ] && export EMOLENS_SHAPE_TOKENIZER=$PWD/.gpu/tok
[ -d .gpu/data/crowd-enVENT ] && export EMOLENS_CROWD_ENVENT=$PWD/.gpu/data/crowd-enVENT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
python3 -c "import torch, transformers, emolens.study.runner as r; print('torch', torch.__version__, \
'transformers', transformers.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" \
    || exit 1

part() {  # part NAME SECONDS STAGES SIZES...
    name=$1 limit=$2 stages=$3; shift 3
    [ -n "${GPU_TINY:-}" ] && set -- --tiny  # the CPU check: gpu_protocol's --tiny sizes instead
    echo "== part $name: stages $stages, $*, limit $limit s"
    timeout -s INT "$limit" python3 bench/gpu_protocol.py --stages "$stages" --json "$OUT/$name.json" "$@" \
        > "$OUT/$name.log" 2>&1
    echo "exit $?"
    grep -v "^\s*$" "$OUT/$name.log" | grep -E "^\[stage\]|^\||^\*\*|^plain|^projected|^not in|^peak|^machine|Error|error:|File \"/" \
        | grep -v "^|---" | tail -30
}
# 1. the "before" configuration (1,300 items, every layer: 480 probe slices), front stages
part front "${GPU_LIMIT_FRONT:-150}" readout,extract,probe --limit 1300 --layer-step 1
# 2. the same for the causal stages: 64 items, every window (the ablation row)
part causal "${GPU_LIMIT_CAUSAL:-130}" readout,ablate,patch,knockout --limit 1300 --max-items 64 --layer-step 1 \
    --pairs 64
# 3. steering and robustness on every 4th window (their statistics search every setting)
part steer "${GPU_LIMIT_STEER:-180}" readout,extract,probe,steer,robustness --limit 650 --max-items 64 \
    --layer-step 4 --pairs 64
