"""``batch_size: auto``: the chooser prices a row from the model's shapes and fills a share of free memory."""

from __future__ import annotations

from types import SimpleNamespace

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
