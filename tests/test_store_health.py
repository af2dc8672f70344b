"""Damaged stores are found and repaired (only the damage is recomputed); writers are locked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from emolens.activations.health import check_store
from emolens.activations.store import ActivationStore, StoreWriter, prepare_store
from emolens.errors import EmolensError
from emolens.locks import LOCK_NAME

IDS = [f"item-{i}" for i in range(10)]
IDENTITY = {"model": "m", "sites": ["resid"], "layers": [0, 1], "site_layers": {"resid": [0, 1]},
            "positions": [-1, -2], "dtype": "float16", "readout": True}
ARRAYS = {"resid": ((10, 2, 2, 3), "float16")}
RUN = {"chunk_size": 4, "batch_size": 2, "device": "cpu"}


def data(rows: range) -> np.ndarray:
    return np.arange(len(rows) * 12, dtype=np.float32).reshape(len(rows), 2, 2, 3) + 100 * rows.start


def write(root, stop_after: int | None = None, identity=IDENTITY):
    """Write (or resume, or repair) the store; returns it and the chunks computed this time."""
    w = prepare_store(root, identity, IDS, ARRAYS, RUN)
    if isinstance(w, ActivationStore):
        return w, []
    computed = []
    for chunk in w.pending():
        rows = w.chunk_range(chunk)
        buf = w.buffers(chunk)
        buf["resid"][:] = data(rows)
        w.commit(chunk, buf, pd.DataFrame({"id": [IDS[i] for i in rows], "gold": "joy", "pred": "joy",
                                           "correct": True}))
        computed.append(chunk)
        if stop_after is not None and chunk == stop_after:
            w.release()
            return w, computed
    return w.finish(), computed


@pytest.fixture
def reference(tmp_path):
    store, _ = write(tmp_path / "ref")
    return (tmp_path / "ref" / "resid.npy").read_bytes(), store.readout()


def same_as(reference, root) -> bool:
    store = ActivationStore.open(root)
    return (root / "resid.npy").read_bytes() == reference[0] and store.readout().equals(reference[1])


def test_truncated_array_recomputes_only_the_lost_chunks(tmp_path, reference, capsys):
    root = tmp_path / "s"
    write(root)
    size = (root / "resid.npy").stat().st_size
    os.truncate(root / "resid.npy", size - 30)  # the last chunk (items 8, 9) loses bytes
    with pytest.raises(EmolensError, match=r"damaged .*resid.npy has .* bytes.*rerun the extract command"):
        ActivationStore.open(root)
    store, computed = write(root)
    assert computed == [2]
    assert "resid.npy has" in capsys.readouterr().err
    assert same_as(reference, root)


def test_deleted_array_is_recreated_and_every_chunk_recomputed(tmp_path, reference):
    root = tmp_path / "s"
    write(root)
    (root / "resid.npy").unlink()
    assert "resid.npy is missing" in check_store(root).problems
    _, computed = write(root)
    assert computed == [0, 1, 2] and same_as(reference, root)


def test_flipped_bytes_fail_the_checksum_of_their_chunk_only(tmp_path, reference):
    root = tmp_path / "s"
    write(root)
    arr = np.load(root / "resid.npy", mmap_mode="r+")
    arr[5, 0, 0, 0] = 12345  # chunk 1 (items 4..7)
    arr.flush()
    del arr
    assert check_store(root, full=False).ok  # sizes are fine; only the checksums can see it
    assert check_store(root).redo == {1}
    _, computed = write(root)
    assert computed == [1] and same_as(reference, root)


def test_deleted_readout_chunk_of_an_incomplete_store(tmp_path, reference):
    root = tmp_path / "s"
    write(root, stop_after=1)
    (root / "readout" / "chunk-00000.parquet").unlink()
    assert check_store(root).redo == {0}
    _, computed = write(root)
    assert computed == [0, 2] and same_as(reference, root)


def test_deleted_readout_parquet_is_rejoined_without_recomputing(tmp_path, reference):
    root = tmp_path / "s"
    write(root)
    (root / "readout.parquet").unlink()
    _, computed = write(root)
    assert computed == [] and same_as(reference, root)


def test_corrupt_manifest_is_restored_from_its_backup(tmp_path, reference):
    root = tmp_path / "s"
    write(root, stop_after=0)
    (root / "manifest.json").write_text('{"format": "emolens-act')
    with pytest.raises(EmolensError, match="manifest.json is corrupt"):
        ActivationStore.open(root, allow_incomplete=True)
    _, computed = write(root)
    assert computed == [1, 2] and same_as(reference, root)
    assert json.loads((root / "manifest.json").read_text())["item_ids"] == IDS


def test_failed_store_without_finished_chunks_does_not_block_the_corrected_rerun(tmp_path, capsys):
    root = tmp_path / "s"
    prepare_store(root, {**IDENTITY, "dtype": "float32"}, IDS, ARRAYS, RUN).release()  # failed before chunk 0
    store, computed = write(root)
    assert computed == [0, 1, 2] and store.identity["dtype"] == "float16"
    assert "held no finished chunk" in capsys.readouterr().err
    # a store with work in it is still protected
    with pytest.raises(EmolensError, match="different dtype"):
        prepare_store(root, {**IDENTITY, "dtype": "float32"}, IDS, ARRAYS, RUN)


def test_out_pointing_at_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(EmolensError, match="is a file"):
        prepare_store(tmp_path / "f", IDENTITY, IDS, ARRAYS, RUN)


def test_second_writer_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    root = tmp_path / "s"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        root.mkdir()
        (root / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                  "since": "now", "what": "activation store"}))
        with pytest.raises(EmolensError, match=f"being written by pid {holder.pid} on host"):
            prepare_store(root, IDENTITY, IDS, ARRAYS, RUN)
    finally:
        holder.kill()
        holder.wait()
    writer = prepare_store(root, IDENTITY, IDS, ARRAYS, RUN)  # the holder is gone: stale
    assert isinstance(writer, StoreWriter)
    assert f"locked by pid {holder.pid}" in capsys.readouterr().err
    assert json.loads((root / LOCK_NAME).read_text())["pid"] == os.getpid()
    writer.release()
    assert not (root / LOCK_NAME).exists()


def test_doctor_reports_then_repairs_and_extract_recomputes_only_the_damage(tmp_path, run_cli):
    root = tmp_path / "store"
    args = ["extract", "--model", "tiny:llama", "--data", "stimuli", "--limit", "13", "--sites", "resid",
            "--layers", "0:2", "--readout", "--chunk-size", "4", "--batch-size", "4", "--out", str(root)]
    code, _, err = run_cli(args)
    assert code == 0, err
    reference = (root / "resid.npy").read_bytes()
    code, out, _ = run_cli(["doctor", str(root)])
    assert code == 0 and "ok, 13 items" in out
    os.truncate(root / "resid.npy", len(reference) - 10)
    (root / "readout" / "chunk-00001.parquet").unlink()
    code, out, _ = run_cli(["doctor", str(root)])
    assert code == 1 and "resid.npy has" in out and "--repair" in out
    code, _, err = run_cli(["probe", "--acts", str(root), "--out", str(tmp_path / "p"), "--items", "all"])
    assert code == 2 and "is damaged" in err and err.count("\n") == 1
    code, out, _ = run_cli(["doctor", str(root), "--repair"])
    assert code == 0 and "marked for recomputation" in out
    assert json.loads((root / "progress.json").read_text())["redo"] == [3]  # the truncated tail chunk
    code, _, err = run_cli(args)
    assert code == 0 and (root / "resid.npy").read_bytes() == reference
    code, out, _ = run_cli(["doctor", str(root)])
    assert code == 0 and "complete" in out


def test_damaged_bfloat16_store_is_repaired_to_the_same_bytes(tmp_path):
    """A bfloat16 store (uint16 bit patterns on disk) is checked, checksummed and repaired like any other:
    a truncated tail, flipped bits and a deleted array each cost only their chunks, and the result is
    the bytes of an undamaged store."""
    import torch

    from emolens.activations.store import bfloat16_bits

    identity, arrays = {**IDENTITY, "dtype": "bfloat16"}, {"resid": ((10, 2, 2, 3), "bfloat16")}

    def write_bf16(root):
        w = prepare_store(root, identity, IDS, arrays, RUN)
        if isinstance(w, ActivationStore):
            return []
        computed = []
        for chunk in w.pending():
            rows = w.chunk_range(chunk)
            buf = w.buffers(chunk)
            buf["resid"][:] = bfloat16_bits(torch.from_numpy(data(rows)) * 1e3)  # past float16's 65504
            w.commit(chunk, buf, pd.DataFrame({"id": [IDS[i] for i in rows], "gold": "joy", "pred": "joy",
                                               "correct": True}))
            computed.append(chunk)
        w.finish()
        return computed

    write_bf16(tmp_path / "ref")
    reference = (tmp_path / "ref" / "resid.npy").read_bytes()
    assert ActivationStore.open(tmp_path / "ref").read("resid")[9].max() > 65504
    root = tmp_path / "s"
    write_bf16(root)
    os.truncate(root / "resid.npy", len(reference) - 10)
    with pytest.raises(EmolensError, match="resid.npy has"):
        ActivationStore.open(root)
    assert write_bf16(root) == [2] and (root / "resid.npy").read_bytes() == reference
    raw = np.load(root / "resid.npy", mmap_mode="r+")
    raw[5, 0, 0, 0] ^= 1  # one bit of an item in chunk 1
    raw.flush()
    del raw
    assert check_store(root, full=False).ok and check_store(root).redo == {1}
    assert write_bf16(root) == [1] and (root / "resid.npy").read_bytes() == reference
    (root / "resid.npy").unlink()
    assert write_bf16(root) == [0, 1, 2] and (root / "resid.npy").read_bytes() == reference
    assert check_store(root).ok
