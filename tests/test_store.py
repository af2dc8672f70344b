"""The activation store on its own: layout, atomic chunk commits, resume, refusal, readers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emolens.activations.store import ActivationStore, StoreWriter, prepare_store
from emolens.errors import EmolensError

IDS = [f"item-{i}" for i in range(10)]
IDENTITY = {"model": "m", "sites": ["resid"], "layers": [0, 1], "site_layers": {"resid": [0, 1]},
            "positions": [-1, -2], "dtype": "float16"}
ARRAYS = {"resid": ((10, 2, 2, 3), "float16")}
RUN = {"chunk_size": 4, "batch_size": 2, "device": "cpu"}


def data(rows: range) -> np.ndarray:
    return (np.arange(len(rows) * 12, dtype=np.float32).reshape(len(rows), 2, 2, 3) + 100 * rows.start)


def write_all(root, stop_after: int | None = None) -> StoreWriter | ActivationStore:
    w = prepare_store(root, IDENTITY, IDS, ARRAYS, RUN)
    if isinstance(w, ActivationStore):
        return w
    for chunk in range(w.chunks_done, w.n_chunks):
        buf = w.buffers(chunk)
        buf["resid"][:] = data(w.chunk_range(chunk))
        w.commit(chunk, buf)
        if stop_after is not None and chunk == stop_after:
            return w
    return w.finish()


def test_roundtrip_and_readers(tmp_path):
    store = write_all(tmp_path / "s")
    assert isinstance(store, ActivationStore) and store.complete
    arr = store.read("resid")
    assert isinstance(arr, np.memmap) and arr.shape == (10, 2, 2, 3) and arr.dtype == np.float16
    expected = np.concatenate([data(range(s, min(10, s + 4))) for s in (0, 4, 8)]).astype(np.float16)
    assert np.array_equal(np.asarray(arr), expected)
    t = store.torch("resid")
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(expected))
    assert store.item_ids == IDS and store.sites == ["resid"] and store.layers == [0, 1]
    assert store.positions == [-1, -2] and len(store) == 10
    assert np.array_equal(store.index_of(["item-3", "item-0"]), [3, 0])
    # an array read with plain numpy is the same .npy
    assert np.array_equal(np.load(tmp_path / "s" / "resid.npy"), expected)
    with pytest.raises(EmolensError, match="no readout"):
        store.readout()
    with pytest.raises(EmolensError, match="not in store"):
        store.read("mlp")


def test_resume_after_kill_is_bit_identical(tmp_path):
    write_all(tmp_path / "full")
    partial = write_all(tmp_path / "part", stop_after=0)
    assert isinstance(partial, StoreWriter)
    # simulate a kill mid-chunk: garbage past the committed chunk, a stray temp file
    with open(tmp_path / "part" / "resid.npy", "r+b") as fh:
        fh.seek(-20, 2)
        fh.write(b"\xff" * 20)
    (tmp_path / "part" / "progress.json.tmp").write_text("{broken")
    with pytest.raises(EmolensError, match="incomplete"):
        ActivationStore.open(tmp_path / "part")
    resumed = prepare_store(tmp_path / "part", IDENTITY, IDS, ARRAYS, RUN)
    assert isinstance(resumed, StoreWriter) and resumed.chunks_done == 1
    write_all(tmp_path / "part")
    a = (tmp_path / "full" / "resid.npy").read_bytes()
    b = (tmp_path / "part" / "resid.npy").read_bytes()
    assert a == b


def test_mismatch_refused_and_complete_reused(tmp_path):
    root = tmp_path / "s"
    write_all(root)
    before = (root / "resid.npy").read_bytes()
    with pytest.raises(EmolensError, match="different positions"):
        prepare_store(root, {**IDENTITY, "positions": [-1]}, IDS, ARRAYS, RUN)
    with pytest.raises(EmolensError, match="item_ids"):
        prepare_store(root, IDENTITY, IDS[::-1], ARRAYS, RUN)
    reused = prepare_store(root, IDENTITY, IDS, ARRAYS, {**RUN, "batch_size": 8})  # complete: reuse
    assert isinstance(reused, ActivationStore)
    assert (root / "resid.npy").read_bytes() == before
    # an incomplete store resumes only with the same run settings
    write_all(tmp_path / "p", stop_after=0)
    with pytest.raises(EmolensError, match="batch_size"):
        prepare_store(tmp_path / "p", IDENTITY, IDS, ARRAYS, {**RUN, "batch_size": 8})


def test_foreign_folder_and_manifest(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(EmolensError, match="not an activation store"):
        prepare_store(tmp_path / "x", IDENTITY, IDS, ARRAYS, RUN)
    with pytest.raises(EmolensError, match="no manifest"):
        ActivationStore.open(tmp_path / "x")
    # leftovers of a run killed before its manifest are cleared, not refused
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "resid.npy.tmp").write_bytes(b"partial")
    store = write_all(tmp_path / "y")
    manifest = json.loads((tmp_path / "y" / "manifest.json").read_text())
    assert manifest["format"] == "emolens-activations" and manifest["item_ids"] == IDS
    assert {"created", "versions", "run", "arrays"} <= set(manifest)
    assert store.complete and not list((tmp_path / "y").glob("*.tmp"))


# ---------------------------------------------------------------------------------------------- bfloat16

BF16_IDENTITY = {**IDENTITY, "dtype": "bfloat16"}
BF16_ARRAYS = {"resid": ((10, 2, 2, 3), "bfloat16")}
# values float16 cannot hold: above its 65504, below its 2^-14 normal range, and bf16's own extremes
EXTREMES = [1e5, -7e4, 3e38, 1e-6, -2.0**-20, 1e-30, 0.0, -0.0, 1.0, float("inf")]


def bf16_values(rows: range) -> torch.Tensor:
    """Rows of bfloat16 values, a third of them out of float16's reach."""
    t = torch.from_numpy(data(rows)).reshape(len(rows), -1) / 7
    t[:, :len(EXTREMES)] = torch.tensor(EXTREMES)
    return t.reshape(len(rows), 2, 2, 3).to(torch.bfloat16)


def write_bf16(root, stop_after: int | None = None) -> StoreWriter | ActivationStore:
    from emolens.activations.store import bfloat16_bits

    w = prepare_store(root, BF16_IDENTITY, IDS, BF16_ARRAYS, RUN)
    if isinstance(w, ActivationStore):
        return w
    for chunk in w.pending():
        buf = w.buffers(chunk)
        buf["resid"][:] = bfloat16_bits(bf16_values(w.chunk_range(chunk)))
        w.commit(chunk, buf)
        if stop_after is not None and chunk == stop_after:
            w.release()
            return w
    return w.finish()


def test_bfloat16_store_round_trips_bit_for_bit(tmp_path):
    """Values float16 would overflow or flush (1e5, 3e38, 1e-6, 1e-30) come back exactly, as float32
    through ``read`` (whole, sliced, fancy-indexed) and as bfloat16 through ``torch``."""
    store = write_bf16(tmp_path / "s")
    want = torch.cat([bf16_values(range(s, min(10, s + 4))) for s in (0, 4, 8)])
    want32 = want.float().numpy()
    with np.errstate(over="ignore"):
        as_half = want32.astype(np.float16).astype(np.float32)
    assert (as_half != want32).sum() >= 4 * 10  # float16 cannot hold 1e5, -7e4, 3e38, -2^-20 (and loses 1e-6, 1e-30)
    assert store.dtype("resid") == "bfloat16" and store.manifest["arrays"]["resid"]["dtype"] == "bfloat16"
    arr = store.read("resid")
    assert arr.shape == (10, 2, 2, 3) and arr.dtype == np.float32 and len(arr) == 10 and arr.ndim == 4
    assert np.asarray(arr).dtype == np.float32 and np.array_equal(np.asarray(arr), want32)
    assert np.array_equal(arr[3:7, 1], want32[3:7, 1]) and np.array_equal(arr[[9, 0], 0, 1], want32[[9, 0], 0, 1])
    assert arr[0, 0, 0, 2] == want32[0, 0, 0, 2] > 1e38 and 0 < arr[0, 0, 1, 2] == want32[0, 0, 1, 2] < 2.0**-90
    assert np.isinf(arr[0, 1, 1, 0])
    assert np.array_equal(np.asarray(arr, dtype=np.float64), want32.astype(np.float64))
    t = store.torch("resid")
    assert t.dtype == torch.bfloat16 and torch.equal(t, want)
    # the file is a standard .npy of the bit patterns, and nothing but the patterns
    raw = np.load(tmp_path / "s" / "resid.npy")
    assert raw.dtype == np.uint16 and np.array_equal(raw, want.view(torch.int16).numpy().view(np.uint16))


def test_bfloat16_commit_refuses_float_buffers(tmp_path):
    w = prepare_store(tmp_path / "s", BF16_IDENTITY, IDS, BF16_ARRAYS, RUN)
    with pytest.raises(ValueError, match="bit patterns"):
        w.commit(0, {"resid": data(w.chunk_range(0))})  # floats would be cast to integers, not encoded
    w.release()


def test_bfloat16_store_resumes_bit_identically_and_refuses_another_dtype(tmp_path):
    write_bf16(tmp_path / "full")
    partial = write_bf16(tmp_path / "part", stop_after=0)
    assert isinstance(partial, StoreWriter)
    resumed = prepare_store(tmp_path / "part", BF16_IDENTITY, IDS, BF16_ARRAYS, RUN)
    assert isinstance(resumed, StoreWriter) and resumed.pending() == [1, 2]
    resumed.release()
    write_bf16(tmp_path / "part")
    assert (tmp_path / "full" / "resid.npy").read_bytes() == (tmp_path / "part" / "resid.npy").read_bytes()
    for root in (tmp_path / "full", tmp_path / "part"):
        before = (root / "resid.npy").read_bytes()
        for dtype in ("float32", "float16"):
            with pytest.raises(EmolensError, match="different dtype"):
                prepare_store(root, {**IDENTITY, "dtype": dtype}, IDS, {"resid": ((10, 2, 2, 3), dtype)}, RUN)
        assert (root / "resid.npy").read_bytes() == before
    # an incomplete bf16 store with its chunk 0 is refused too, never appended to as float32
    write_bf16(tmp_path / "inc", stop_after=0)
    with pytest.raises(EmolensError, match="different dtype"):
        prepare_store(tmp_path / "inc", {**IDENTITY, "dtype": "float32"}, IDS, {"resid": ((10, 2, 2, 3), "float32")},
                      RUN)
