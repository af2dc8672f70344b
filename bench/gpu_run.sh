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
# The stages run in two parts -- the causal stages, then extract, probe and what needs them -- each a
# fresh process under its own time limit (SIGINT, so the study stops cleanly and the table of the
# stages that finished still prints): a slow stage cannot take the other part's numbers with it.
# Sizes are gpu_protocol.py's defaults unless GPU_ARGS overrides them.
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

part() {  # part NAME SECONDS STAGES
    echo "== part $1: stages $3, limit $2 s"
    # shellcheck disable=SC2086
    timeout -s INT "$2" python3 bench/gpu_protocol.py --stages "$3" --json "$OUT/$1.json" ${GPU_ARGS:-} \
        > "$OUT/$1.log" 2>&1
    echo "exit $?"
    grep -v "^\s*$" "$OUT/$1.log" | grep -E "^\[stage\]|^\||^\*\*|^plain|^projected|^peak|^machine|Error|error:" \
        | tail -40
}
part causal "${GPU_LIMIT_CAUSAL:-170}" readout,ablate,patch,knockout
part rest "${GPU_LIMIT_REST:-300}" readout,extract,probe,steer,robustness
