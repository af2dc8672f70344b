"""Extraction end to end on a tiny model: values, readout, resume after a kill, refusal, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emolens.activations.extract import extract
from emolens.activations.store import ActivationStore
from emolens.data.corpus import EmotionDataset
from emolens.errors import EmolensError
from emolens.inputs.batching import encode
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.labels import EMOTIONS
from emolens.readout import LabelReader

TEXTS = ["I saw mouldy food.", "My first child was born.", "My dog died last week.", "I was confronted by a thief.",
         "I gave my wallet to a friend.", "I saw my teacher on an aeroplane!", "I failed a maths test.",
         "I found out my mam didn't need a serious surgery and we all went out to celebrate."]


@pytest.fixture(scope="module")
def dataset() -> EmotionDataset:
    labels = [EMOTIONS[i % len(EMOTIONS)] for i in range(len(TEXTS))]
    return EmotionDataset(ids=[f"t{i}" for i in range(len(TEXTS))], texts=TEXTS, labels=labels,
                          appraisals=np.zeros((len(TEXTS), 21)), name="tiny-set")


KW = dict(sites="resid,attn,heads,embed", layers="all", positions="-1,-2,context", batch_size=3, chunk_size=3,
          progress=False)


def test_values_match_single_forward(tiny_llama, dataset, tmp_path):
    lm = tiny_llama
    store = extract(lm, dataset, tmp_path / "s", readout=True, dtype="float32", **KW)
    assert store.sites == ["resid", "attn", "heads", "embed"] and store.positions == [-1, -2, "context"]
    reg = lm.sites
    assert store.read("resid").shape == (8, reg.n_layers, 3, reg.d_model)
    assert store.read("heads").shape == (8, reg.n_layers, 3, reg.n_heads, reg.head_dim)
    assert store.read("embed").shape == (8, 1, 3, reg.d_model) and store.layers_of("embed") == [0]
    spec = PromptSpec()
    prompts = build_prompts(dataset.texts, spec, lm.tokenizer)
    reader = LabelReader.build(lm.tokenizer, spec.labels, prompts[0].text, prompts[0].label_prefix)
    frame = store.readout()
    assert list(frame["id"]) == dataset.ids
    for i in (0, 7):  # one item alone, no padding
        batch = encode(lm.tokenizer, [prompts[i]])
        with torch.no_grad():
            out = lm.model(**batch.model_inputs(), output_hidden_states=True)
        hs = out.hidden_states
        for layer in range(reg.n_layers - 1):
            got = store.read("resid")[i, layer]
            np.testing.assert_allclose(got[0], hs[layer + 1][0, -1].numpy(), atol=1e-4, rtol=0)
            np.testing.assert_allclose(got[1], hs[layer + 1][0, -2].numpy(), atol=1e-4, rtol=0)
            ctx = batch.span_masks["context"][0]
            np.testing.assert_allclose(got[2], hs[layer + 1][0][ctx].mean(0).numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(store.read("embed")[i, 0, 0], hs[0][0, -1].numpy(), atol=1e-5, rtol=0)
        scores = reader.score(lm.model, batch, out.logits[:, -1]).numpy()[0]
        stored = frame.loc[i, [f"logp_{lab}" for lab in spec.labels]].to_numpy(dtype=np.float32)
        np.testing.assert_allclose(stored, scores, atol=1e-4, rtol=0)
        assert frame.loc[i, "pred"] == spec.labels[int(scores.argmax())]
    assert set(frame.columns) >= {"id", "gold", "pred", "correct"}


def test_resume_after_kill_bit_identical(tiny_llama, dataset, tmp_path):
    full = extract(tiny_llama, dataset, tmp_path / "full", **KW)

    class Killed(Exception):
        pass

    def kill(chunk):
        if chunk == 1:
            raise Killed

    with pytest.raises(Killed):
        extract(tiny_llama, dataset, tmp_path / "part", on_chunk=kill, **KW)
    with pytest.raises(EmolensError, match="incomplete"):
        ActivationStore.open(tmp_path / "part")
    resumed = extract(tiny_llama, dataset, tmp_path / "part", **KW)
    for site in full.sites:
        assert (tmp_path / "full" / f"{site}.npy").read_bytes() == (tmp_path / "part" / f"{site}.npy").read_bytes()
    # a complete, matching store is reused as is; a mismatched one is refused
    again = extract(tiny_llama, dataset, tmp_path / "part", **KW)
    assert again.manifest == resumed.manifest
    with pytest.raises(EmolensError, match="different positions"):
        extract(tiny_llama, dataset, tmp_path / "part", **{**KW, "positions": "-1"})
    with pytest.raises(EmolensError, match="different"):
        extract(tiny_llama, dataset, tmp_path / "part", spec=PromptSpec(template="T4"), **KW)


def test_bad_inputs(tiny_llama, dataset, tmp_path):
    for kw, match in ((dict(sites="resid,nope"), "unknown site"), (dict(layers="9"), "out of range"),
                      (dict(positions="-1,banana"), "bad position"), (dict(positions="-60"), "outside"),
                      (dict(dtype="bfloat8"), "storage dtype")):
        with pytest.raises(EmolensError, match=match):
            extract(tiny_llama, dataset, tmp_path / f"bad-{match[:4]}", **{**KW, **kw})


def test_cli_extract(tmp_path, dataset, capsys):
    from emolens.cli.app import main

    path = tmp_path / "data.csv"
    import pandas as pd

    pd.DataFrame({"id": dataset.ids, "text": dataset.texts, "label": dataset.labels}).to_csv(path, index=False)
    out = tmp_path / "store"
    main(["extract", "--model", "tiny:gpt2", "--data", str(path), "--sites", "attn,mlp,resid",
          "--positions=-1,-2", "--readout", "--batch-size", "4", "--out", str(out)])
    store = ActivationStore.open(out)
    # the default store dtype is the model's compute dtype: float32 for a CPU model
    assert store.read("mlp").shape[:3] == (8, 3, 2) and store.read("mlp").dtype == np.float32
    assert len(store.readout()) == 8
    assert "8 items" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["extract", "--model", "tiny:gpt2", "--data", str(path), "--sites", "resid", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("emolens: error:") and "different" in err and len(err.strip().splitlines()) == 1
    # --dtype bfloat16 on a float32 model: its values rounded, decoded to float32 on read
    main(["extract", "--model", "tiny:gpt2", "--data", str(path), "--sites", "resid", "--dtype", "bfloat16",
          "--out", str(tmp_path / "bf16")])
    bf16 = ActivationStore.open(tmp_path / "bf16")
    assert bf16.dtype("resid") == "bfloat16" and bf16.read("resid").dtype == np.float32
    assert "8 items" in capsys.readouterr().out


def test_a_store_the_disk_cannot_hold_is_refused_before_any_work(tiny_llama, dataset, tmp_path, monkeypatch):
    """The size is the arrays' exact bytes; a disk with less free space gets one line naming it."""
    import shutil
    from collections import namedtuple

    from emolens.activations.extract import store_bytes

    d = tiny_llama.sites.d_model
    need = store_bytes({"resid": ((len(dataset), 3, 1, d), "float32"), "attn": ((len(dataset), 3, 1, d), "float16")})
    assert need == len(dataset) * 3 * d * (4 + 2)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**12, 10**12 - need // 2, need // 2))
    with pytest.raises(EmolensError, match=r"needs .* GB but .* GB free"):
        extract(tiny_llama, dataset, tmp_path / "store", sites=["resid", "attn"], layers="all", positions=[-1],
                dtype="float32", progress=False)
    assert not (tmp_path / "store" / "manifest.json").exists()


def test_store_dtype_follows_the_model_and_keeps_bfloat16_values_exactly(tiny_llama, dataset, tmp_path):
    """``auto`` stores a model's activations in its compute dtype: a bfloat16 model's as bfloat16
    (uint16 bit patterns on disk), bit for bit the capture, and every reader -- ``read``, ``torch``, the
    probes' slice stack and streaming, steering's ``store_resid``/``store_acts`` -- gets those values.
    A float32 request on that store is refused; explicit ``bfloat16`` on a float32 model rounds its values."""
    from emolens.activations.extract import store_dtype_for
    from emolens.engine.intervention import run_forward
    from emolens.engine.ops import Capture
    from emolens.model.loading import load_model
    from emolens.probes.probing import site_stack
    from emolens.probes.slices import slice_block
    from emolens.steering.directions import store_acts, store_resid
    from emolens.study.config import ExtractConfig

    assert [store_dtype_for("auto", d) for d in (torch.float32, torch.float16, torch.bfloat16)] == \
        ["float32", "float16", "bfloat16"]
    assert [store_dtype_for(n, torch.float32) for n in ("float32", "float16", "bfloat16")] == \
        ["float32", "float16", "bfloat16"]
    with pytest.raises(EmolensError, match="storage dtype"):
        store_dtype_for("bfloat8", torch.bfloat16)
    assert ExtractConfig(dtype="bfloat16").dtype == "bfloat16"  # a study's extract.dtype takes it too
    with pytest.raises(ValueError, match="bfloat16"):
        ExtractConfig(dtype="bfloat8")

    def captured(lm) -> torch.Tensor:
        prompts = build_prompts(dataset.texts, PromptSpec(), lm.tokenizer)
        _, run = run_forward(lm, encode(lm.tokenizer, prompts), [Capture("resid", layers="all", positions=-1)],
                             need_logits=False)
        return run.captures["resid"]  # [N, L, 1, d] in the model's dtype

    lm = load_model("tiny:llama", dtype="bfloat16")
    store = extract(lm, dataset, tmp_path / "bf16", sites=["resid"], positions=[-1], batch_size=len(dataset),
                    progress=False)
    want = captured(lm)
    assert want.dtype == torch.bfloat16 and want.abs().max() > 0
    want32 = want.float().numpy()
    assert store.manifest["identity"]["dtype"] == "bfloat16" and store.dtype("resid") == "bfloat16"
    assert np.load(tmp_path / "bf16" / "resid.npy", mmap_mode="r").dtype == np.uint16
    assert torch.equal(store.torch("resid"), want)
    assert store.read("resid").dtype == np.float32 and np.array_equal(store.read("resid")[:], want32)
    n, L = len(dataset), want.shape[1]
    X, slices, _ = site_stack(store, "resid", np.arange(n))  # the probes' [layers*positions, items, d]
    assert X.dtype == np.float32 and np.array_equal(X, want32[:, :, 0].transpose(1, 0, 2))
    assert slices == [("resid", layer, -1) for layer in range(L)]
    cpu = torch.device("cpu")
    for source in (store.read("resid"), store.torch("resid")):  # streamed a chunk of rows at a time
        got = torch.cat([slice_block(source, s, min(s + 3, n), cpu, torch.float32) for s in range(0, n, 3)])
        assert torch.equal(got, want.float())
    layers = [0, L - 1]
    assert torch.equal(store_resid(store, dataset, layers), want[:, layers, 0].float())
    acts = store_acts(tmp_path / "bf16", PromptSpec())
    assert acts is not None and torch.equal(acts(dataset, layers), want[:, layers, 0].float())
    before = (tmp_path / "bf16" / "resid.npy").read_bytes()
    for other in ("float32", "float16"):
        with pytest.raises(EmolensError, match="different dtype"):
            extract(lm, dataset, tmp_path / "bf16", sites=["resid"], positions=[-1], dtype=other, progress=False)
    assert (tmp_path / "bf16" / "resid.npy").read_bytes() == before
    # float16 stays available on a bfloat16 model (with its overflow check), bfloat16 on a float32 one
    half = extract(lm, dataset, tmp_path / "f16", sites=["resid"], positions=[-1], dtype="float16", progress=False)
    assert half.dtype("resid") == "float16" and half.read("resid").dtype == np.float16
    rounded = extract(tiny_llama, dataset, tmp_path / "f32-as-bf16", sites=["resid"], positions=[-1],
                      dtype="bfloat16", batch_size=len(dataset), progress=False)
    want = captured(tiny_llama)
    assert want.dtype == torch.float32 and not torch.equal(want.to(torch.bfloat16).float(), want)
    assert torch.equal(rounded.torch("resid"), want.to(torch.bfloat16))


def test_auto_chunk_size_fills_a_gib_of_buffers_and_stores_the_same_values(tiny_llama, dataset, tmp_path):
    """``chunk_size: auto`` sizes a chunk by its host buffers (an 8B's one-position store: 1,365 items a
    GiB; five positions: 273), and changes only how items are grouped, not what is stored."""
    from emolens.activations.extract import CHUNK_BYTES, MIN_CHUNK, auto_chunk_size

    def store_of(positions: int) -> dict:  # an 8B Llama in bfloat16: 3 sites x 32 layers x 4,096 wide
        return {s: ((6600, 32, positions, 4096), "bfloat16") for s in ("attn", "mlp", "resid")}

    assert auto_chunk_size(store_of(1)) == CHUNK_BYTES // (3 * 32 * 4096 * 2) == 1365
    assert auto_chunk_size(store_of(5)) == 273  # 256 in whole batches of 64
    assert auto_chunk_size(store_of(8)) == MIN_CHUNK  # 170 would fit: never fewer than the fixed default
    fixed = extract(tiny_llama, dataset, tmp_path / "fixed", dtype="float32", **KW)
    auto = extract(tiny_llama, dataset, tmp_path / "auto", dtype="float32", **{**KW, "chunk_size": "auto"})
    chunk = auto.manifest["run"]["chunk_size"]  # a tiny model's store: one chunk holds every item
    assert chunk >= MIN_CHUNK and chunk % 3 == 0  # a whole number of batches
    assert fixed.manifest["run"]["chunk_size"] == 3
    for site in fixed.sites:
        np.testing.assert_allclose(auto.read(site), fixed.read(site), atol=1e-5, rtol=0)
    with pytest.raises(EmolensError, match="chunk_size"):
        extract(tiny_llama, dataset, tmp_path / "bad", **{**KW, "chunk_size": "big"})
