"""``batch_size: auto``: the chooser prices a row from the model's shapes and fills a share of free memory."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from emolens.engine import memory
from emolens.engine.memory import CPU_BATCH, GPU_MAX_BATCH, auto_batch_size, row_bytes
from emolens.errors import EmolensError
from emolens.study.config import config_from_dict
from emolens.study.model_handle import ModelHandle

# an 8B Llama-3.1 shape
LLAMA8B = SimpleNamespace(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                          head_dim=128, intermediate_size=14336, vocab_size=128256)


def test_row_bytes_is_cache_plus_live_activations_plus_logits():
    tokens, b = 100, 2
    cache = 2 * 32 * 8 * 128 * tokens * b
    live = (4 * 4096 + 2 * 14336 + 32 * tokens) * tokens * b
    assert row_bytes(LLAMA8B, tokens, b) == cache + live + 4 * 128256
    assert row_bytes(LLAMA8B, tokens, b, stacked=3) == 3 * (cache + live) + 4 * 128256


def test_gpu_batch_fills_half_the_free_memory_and_is_capped():
    per = row_bytes(LLAMA8B, 128, 2)
    assert auto_batch_size(LLAMA8B, "cuda", torch.bfloat16, free=40 * per) == 20
    assert auto_batch_size(LLAMA8B, "cuda", torch.bfloat16, free=10 ** 15) == GPU_MAX_BATCH
    assert auto_batch_size(LLAMA8B, "cuda", torch.bfloat16, free=0) == 1  # never 0: the forward says if it fails
    # float32 values and stacked conditions take more per row: fewer rows
    assert auto_batch_size(LLAMA8B, "cuda", torch.float32, free=40 * per) == 10
    assert auto_batch_size(LLAMA8B, "cuda", torch.bfloat16, free=40 * per, stacked=4) < 20 // 4 + 1


def test_cpu_rule_is_the_default_unless_ram_is_short(monkeypatch):
    assert auto_batch_size(LLAMA8B, "cpu", torch.float32, free=10 ** 12) == CPU_BATCH
    per = row_bytes(LLAMA8B, 128, 4)
    assert auto_batch_size(LLAMA8B, "cpu", torch.float32, free=6 * per) == 3
    monkeypatch.setattr(memory, "free_memory", lambda _d: 6 * per)  # what the host says is available
    assert auto_batch_size(LLAMA8B, "cpu", torch.float32) == 3


def test_real_free_memory_reader_gives_a_positive_number():
    free = memory.free_memory("cpu")
    assert isinstance(free, int) and free > 0


def test_study_config_takes_auto_and_the_handle_resolves_it(monkeypatch):
    base = {"name": "t", "models": ["tiny:llama"], "dataset": {"spec": "stimuli", "limit": 8}}
    assert config_from_dict({**base, "batch_size": 8}).batch_size == 8
    cfg = config_from_dict({**base, "batch_size": "auto"})
    assert cfg.batch_size == "auto"
    for bad in (0, "big"):
        with pytest.raises(EmolensError):
            config_from_dict({**base, "batch_size": bad})
    handle = ModelHandle("tiny:llama", cfg)
    monkeypatch.setattr(memory, "free_memory", lambda _d: 10 ** 12)
    assert handle.batch_size() == CPU_BATCH
    assert ModelHandle("tiny:llama", config_from_dict({**base, "batch_size": 5})).batch_size() == 5


def test_stack_budget_keeps_the_cpu_caps_and_fills_a_share_of_a_gpu(monkeypatch):
    from emolens.engine.memory import GPU_STACK_ROWS, STACK_CACHE_BYTES, STACK_CACHE_SHARE, STACK_ROWS, stack_budget

    for var in ("EMOLENS_STACK_ROWS", "EMOLENS_STACK_CACHE_BYTES"):
        monkeypatch.delenv(var, raising=False)
    assert stack_budget("cpu") == (STACK_ROWS, STACK_CACHE_BYTES)
    free = 120 * 2 ** 30  # an H200 with an 8B model loaded
    rows, cache = stack_budget("cuda", free=free)
    assert rows == GPU_STACK_ROWS and cache == int(free * STACK_CACHE_SHARE)
    # an 8B row of ~90 tokens is ~12 MB of cache: the CPU cap stacks two copies of a 64-row batch, a GPU's 16
    per_row = 2 * 32 * 8 * 128 * 90 * 2
    assert STACK_CACHE_BYTES // (64 * per_row) == 2 and min(rows // 64, cache // (64 * per_row)) == 16
    assert stack_budget("cuda", free=2 ** 20)[1] == STACK_CACHE_BYTES  # never below the CPU's cap
    monkeypatch.setenv("EMOLENS_STACK_ROWS", "64")
    monkeypatch.setenv("EMOLENS_STACK_CACHE_BYTES", str(2 ** 20))
    assert stack_budget("cuda", free=free) == (64, 2 ** 20) == stack_budget("cpu")
    monkeypatch.setenv("EMOLENS_STACK_ROWS", "lots")
    with pytest.raises(EmolensError, match="EMOLENS_STACK_ROWS"):
        stack_budget("cpu")


def test_runner_takes_the_device_budget_and_an_override_changes_only_the_stacking(tiny_llama, monkeypatch):
    """The runner's stacking width comes from :func:`stack_budget`; a smaller one runs more
    forwards with the same scores (steering's stacked conditions)."""
    from emolens.data import load_stimuli
    from emolens.engine.runner import ConditionRunner
    from emolens.engine.scoring import LabelScorer
    from emolens.inputs.prompts import build_prompts
    from emolens.labels import EMOTIONS
    from emolens.steering.sweep import Condition, steered_label_scores

    lm = tiny_llama
    prompts = build_prompts(load_stimuli().texts[:6], None, lm.tokenizer)
    reader = LabelScorer.build(lm.tokenizer, EMOTIONS, prompts[0].text, prompts[0].label_prefix)
    g = torch.Generator().manual_seed(0)
    conds = [Condition(f"v{i}", "real", 1, (1,), 1.0, "last", torch.randn(1, lm.sites.d_model, generator=g))
             for i in range(5)]
    monkeypatch.delenv("EMOLENS_STACK_ROWS", raising=False)
    assert ConditionRunner(lm, reader).stack_rows == memory.STACK_ROWS
    wide: dict = {}
    wide_clean, wide_scores = steered_label_scores(lm, prompts, reader, conds, batch_size=6, info=wide)
    monkeypatch.setenv("EMOLENS_STACK_ROWS", "6")  # one condition (or the clean row) per forward
    assert ConditionRunner(lm, reader).stack_rows == 6
    narrow: dict = {}
    narrow_clean, narrow_scores = steered_label_scores(lm, prompts, reader, conds, batch_size=6, info=narrow)
    assert narrow["forwards"] == wide["forwards"] + 5  # 6 condition forwards (clean + 5) instead of 1
    # the same condition steps (1 token x layers 1-2 of 3, 36 rows); only the label head's first-use
    # check, which re-runs the first forward, is 6 rows instead of 36
    assert narrow["token_layers"] == wide["token_layers"] - (36 - 6) * (lm.n_layers - 1)
    for a, b in zip(narrow_scores + list(narrow_clean.values()), wide_scores + list(wide_clean.values()), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
