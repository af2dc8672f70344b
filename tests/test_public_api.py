"""The public API: one import line for the README's example, and the example itself runs.

The README example is executed as written, except that ``load_model`` and ``load_dataset`` are
pointed at a tiny random Llama and the built-in stimuli (the real gemma-3-270m readout of 130
crowd-enVENT items takes longer than a unit test should, and crowd-enVENT is not shipped).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

import emolens
from emolens.data.loading import load_dataset as real_load_dataset
from emolens.model.loading import load_model as real_load_model

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_every_public_name_resolves_and_is_listed():
    assert emolens.__version__ and "__version__" in emolens.__all__
    for name in emolens.__all__:
        assert getattr(emolens, name) is not None, name
    assert set(dir(emolens)) >= set(emolens.__all__)


def test_readout_is_the_function_whatever_was_imported_first():
    """``emolens.readout`` is also a submodule; importing it (as the study does) must not shadow the function."""
    import emolens.readout  # noqa: F401
    import emolens.study.runner  # noqa: F401
    from emolens import readout
    from emolens.readout import readout as defined

    assert readout is defined and callable(readout)


def test_import_emolens_does_not_import_torch():
    """The lazy face keeps ``import emolens`` (and so ``emolens --help``) free of torch and transformers."""
    code = "import sys, emolens; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_readme_example_runs(monkeypatch, capsys):
    blocks = readme_python_blocks()
    assert len(blocks) == 1
    code = blocks[0]
    assert "lm.model(" not in code  # the padding trap: forwards go through run_forward, which passes position ids
    assert re.search(r"^from emolens import [^\n]+$", code, flags=re.M)
    assert len(re.findall(r"^(?:from|import) emolens", code, flags=re.M)) == 1

    def tiny_model(spec, **kwargs):
        assert spec == "gemma-3-270m"
        return real_load_model("tiny:llama", device="cpu")

    def stimuli(spec, **kwargs):
        assert spec == "crowd-envent"
        return real_load_dataset("stimuli")

    monkeypatch.setattr(emolens, "load_model", tiny_model)
    monkeypatch.setattr(emolens, "load_dataset", stimuli)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    lm, run = scope["lm"], scope["run"]
    assert run.captures["attn"].shape == (2, lm.n_layers, 2, lm.sites.d_model)
    raw, calibrated = (float(x) for x in capsys.readouterr().out.split()[:2])
    assert 0 <= raw <= 1 and 0 <= calibrated <= 1
    # the steered forward really used the engine: same batch without the Add differs at the last position
    clean, _ = emolens.run_forward(lm, scope["batch"], [])
    assert not torch.equal(clean.logits[:, -1], scope["out"].logits[:, -1])
