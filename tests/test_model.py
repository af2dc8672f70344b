"""Model loading: specs, aliases, dtype/device resolution and errors."""

from __future__ import annotations

import pytest
import torch

from emolens.errors import EmolensError
from emolens.model.loading import ALIASES, alias_status, load_model, resolve_dtype


def test_tiny_spec_loads_validated_with_left_padding():
    lm = load_model("tiny:olmo2")
    assert lm.sites.family == "olmo2"
    assert lm.tokenizer.padding_side == "left"
    assert lm.dtype == torch.float32
    assert lm.source_id.startswith("tiny:olmo2")


def test_dtype_auto_is_fp32_on_cpu_and_bf16_on_gpu():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    with pytest.raises(EmolensError, match="unknown dtype"):
        resolve_dtype("float8", "cpu")


@pytest.mark.parametrize("spec, message", [
    ("not-a-model", "unknown model"),
    ("./missing/folder", "neither a folder nor a .gguf"),
    ("/nonexistent/model.gguf", "does not exist"),
    ("tiny:bert", "unknown tiny model family"),
])
def test_bad_model_specs_are_one_line_errors(spec, message):
    with pytest.raises(EmolensError, match=message) as info:
        load_model(spec, validate=False)
    assert "\n" not in str(info.value)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(EmolensError, match="no config.json"):
        load_model(str(tmp_path))


def test_saved_folder_roundtrip(tmp_path):
    lm = load_model("tiny:mistral")
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    again = load_model(str(tmp_path))
    assert again.source_id.startswith("folder-sha256:")
    ids = lm.tokenizer(["I saw mouldy food."], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(lm.model(**ids).logits, again.model(**ids).logits)


def test_alias_status_reports_every_alias():
    for name in ALIASES:
        status = alias_status(name)
        assert status.name == name
        assert status.installed or "pip install" in status.detail


@pytest.mark.real_model
def test_real_gemma_loads_with_validated_sites(real_model):
    assert real_model.sites.family == "gemma3_text"
    assert real_model.n_layers == 18
    assert real_model.sites.post_norm
    assert real_model.source_id == "gguf-sha256:" + ALIASES["gemma-3-270m"].sha256
