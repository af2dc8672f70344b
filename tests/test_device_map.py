"""``device_map``: a model dispatched by accelerate (layers on the CPU and offloaded to disk) gives the
same captures, interventions and readout as the same model on one device."""

from __future__ import annotations

import pytest
import torch

from emolens.data.stimuli import load_stimuli
from emolens.engine.intervention import Intervention, run_forward
from emolens.engine.ops import Add, Capture, Zero
from emolens.inputs.batching import iter_batches
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.model.loading import load_model
from emolens.readout import readout

ATOL = 1e-5


def split_map(lm_plain) -> dict[str, str]:
    """Embeddings, first layer and head in CPU memory; every later layer offloaded to disk."""
    names = {"llama": ("model.layers", "model.embed_tokens", "model.norm", ("model.rotary_emb",)),
             "gemma3_text": ("model.layers", "model.embed_tokens", "model.norm", ("model.rotary_emb",)),
             "gpt2": ("transformer.h", "transformer.wte", "transformer.ln_f", ("transformer.wpe",))}
    layers, embed, norm, extra = names[lm_plain.sites.family]
    n = lm_plain.n_layers
    return {embed: "cpu", **{e: "cpu" for e in extra}, f"{layers}.0": "cpu",
            **{f"{layers}.{i}": "disk" for i in range(1, n)}, norm: "cpu", "lm_head": "cpu"}


@pytest.fixture(scope="module", params=["llama", "gemma3_text", "gpt2"])
def pair(request, tmp_path_factory):
    family = request.param
    plain = load_model(f"tiny:{family}")
    dispatched = load_model(f"tiny:{family}", device_map=split_map(plain),
                            offload_folder=tmp_path_factory.mktemp("offload"))
    return plain, dispatched


def batch_of(lm, n: int = 6):
    data = load_stimuli(kind="singles").sample(n, seed=0)
    prompts = build_prompts(data.texts, PromptSpec(template="T1", shots=("joy", "sadness")), lm.tokenizer)
    return next(iter(iter_batches(lm.tokenizer, prompts, n, lm.device)))


def test_dispatch_is_real(pair):
    plain, lm = pair
    assert lm.device_map is not None and "disk" in set(lm.device_map.values())
    offloaded = lm.sites.layers[-1]
    assert any(p.device.type == "meta" for p in offloaded.parameters())  # weights live on disk until used
    assert any(hasattr(m, "_hf_hook") for m in offloaded.modules())  # accelerate's hooks are in place
    assert lm.device == torch.device("cpu") and plain.device_map is None
    assert lm.source_id == plain.source_id and lm.info["device_map"] == lm.device_map


def test_capture_and_logits_match(pair):
    plain, lm = pair
    batch = batch_of(plain)

    def ops():
        return [Capture(s, layers="all", positions=[-1, -2]) for s in ("resid", "attn", "mlp", "heads")] + \
            [Capture("embed", layers="all", positions=-1), Capture("final", layers="all", positions=-1)]

    out_a, run_a = run_forward(plain, batch, ops())
    out_b, run_b = run_forward(lm, batch, ops())
    torch.testing.assert_close(out_b.logits, out_a.logits, atol=ATOL, rtol=0)
    assert run_a.captures.keys() == run_b.captures.keys() and len(run_a.captures) == 6
    for key, value in run_a.captures.items():
        assert run_b.captures[key].device.type == "cpu"
        torch.testing.assert_close(run_b.captures[key], value, atol=ATOL, rtol=0)


def test_interventions_match(pair):
    plain, lm = pair
    batch = batch_of(plain)
    last = plain.n_layers - 1  # a layer whose weights are on disk in the dispatched model
    vec = torch.randn(plain.sites.d_model, generator=torch.Generator().manual_seed(0))

    def ops():
        return [Zero("attn", layers=[last], positions=-1), Add("resid", layers=[0, last], positions=[-1, -2],
                                                               value=vec),
                Zero("heads", layers=[1], positions=-1, heads=[0, 2]), Capture("resid", layers="all", positions=-1)]

    clean, _ = run_forward(plain, batch, [])
    out_a, run_a = run_forward(plain, batch, ops())
    out_b, run_b = run_forward(lm, batch, ops())
    assert not torch.allclose(out_a.logits, clean.logits, atol=1e-3)  # the edits do change the output
    torch.testing.assert_close(out_b.logits, out_a.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(run_b.captures["resid"], run_a.captures["resid"], atol=ATOL, rtol=0)
    with Intervention(lm, [Capture("resid", layers=[0], positions=-1)], stop_early=True) as run:  # early stop
        lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    assert run.stopped
    _, ref = run_forward(plain, batch, [Capture("resid", layers=[0], positions=-1)])
    torch.testing.assert_close(run.captures["resid"], ref.captures["resid"], atol=ATOL, rtol=0)


def test_readout_matches(pair):
    plain, lm = pair
    data = load_stimuli(kind="singles").sample(13, seed=1)
    spec = PromptSpec(template="T1", shots=("joy", "sadness"))
    a = readout(plain, data, spec, batch_size=8, progress=False)
    b = readout(lm, data, spec, batch_size=8, progress=False)
    cols = [c for c in a.frame.columns if c.startswith("logp_")]
    assert cols and (a.frame["pred"] == b.frame["pred"]).all()
    torch.testing.assert_close(torch.tensor(b.frame[cols].to_numpy()), torch.tensor(a.frame[cols].to_numpy()),
                               atol=ATOL, rtol=0)


def test_offload_options_need_a_device_map(pair):
    from emolens.errors import EmolensError

    with pytest.raises(EmolensError, match="only apply with a device_map"):
        load_model("tiny:llama", offload_folder="x")


def test_study_with_device_map_equals_plain_study(tmp_path):
    """``device_map`` in a study config: same stage keys, same tables, same activations as one device."""
    import json

    import numpy as np
    import pandas as pd

    from emolens.activations.store import ActivationStore
    from emolens.study import runner
    from emolens.study.config import config_from_dict

    base = {"name": "dm", "models": ["tiny:llama"], "dataset": {"spec": "stimuli", "limit": 26},
            "stages": ["readout", "extract", "ablate"], "ablate": {"spans": [1], "kinds": ["zero"], "max_items": 8},
            "device": "cpu"}
    dm = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
          "model.layers.2": "disk", "model.norm": "cpu", "lm_head": "cpu"}
    plain = runner.run_study(config_from_dict({**base, "output": str(tmp_path / "a")}), progress=False,
                               echo=lambda *_: None, report=False)
    cfg = config_from_dict({**base, "output": str(tmp_path / "b"), "device_map": dm,
                            "offload_folder": str(tmp_path / "off")})
    assert cfg.fingerprint() == plain_cfg_fp(base)  # placement is not part of the study's identity
    split = runner.run_study(cfg, progress=False, echo=lambda *_: None, report=False)
    assert [o.status for o in split.outcomes] == ["done"] * 3
    placed = json.loads((split.run_dir / "run.json").read_text())["models"]["tiny-llama"]["device_map"]
    assert placed["model.layers.2"] == "disk"  # the stages really ran on the dispatched model
    assert "device_map" not in json.loads((plain.run_dir / "run.json").read_text())["models"]["tiny-llama"]
    for name in base["stages"]:
        a = json.loads((plain.run_dir / "tiny-llama" / name / "stage.json").read_text())
        b = json.loads((split.run_dir / "tiny-llama" / name / "stage.json").read_text())
        assert a["key"] == b["key"]
    for name, table in (("readout", "readout.parquet"), ("ablate", "ablation.parquet")):
        pd.testing.assert_frame_equal(pd.read_parquet(split.run_dir / "tiny-llama" / name / table),
                                      pd.read_parquet(plain.run_dir / "tiny-llama" / name / table),
                                      check_exact=False, rtol=0, atol=ATOL)
    sa = ActivationStore.open(plain.run_dir / "tiny-llama/extract/store")
    sb = ActivationStore.open(split.run_dir / "tiny-llama/extract/store")
    for site in sa.sites:
        np.testing.assert_allclose(np.asarray(sb.read(site)), np.asarray(sa.read(site)), rtol=0, atol=ATOL)


def plain_cfg_fp(base: dict) -> str:
    from emolens.study.config import config_from_dict

    return config_from_dict(base).fingerprint()
