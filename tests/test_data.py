"""crowd-enVENT and generic table loading, sampling and splits."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest

from emolens.data.corpus import EmotionDataset, load_crowd_envent, load_table, read_ids, write_ids
from emolens.data.loading import load_dataset
from emolens.errors import EmolensError
from emolens.labels import ALL_APPRAISALS, EMOTIONS, PAPER_APPRAISALS


def _toy_frame(n=26):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "text_id": [str(1000 + i) for i in range(n)],
        "emotion": [("no-emotion" if i % 13 == 6 else EMOTIONS[i % 13]) for i in range(n)],
        "hidden_emo_text": [f"I did thing number {i} and it made me ...." for i in range(n)],
        "generated_text": [f"I did thing number {i}" for i in range(n)],
    })
    for name in ALL_APPRAISALS:
        frame[name] = rng.integers(1, 6, n)
    return frame


@pytest.fixture(scope="module")
def crowd(crowd_envent_csv):
    return load_crowd_envent(crowd_envent_csv)


def test_shared_csv_loads_as_the_paper_uses_it(crowd):
    assert len(crowd) == 6600
    assert crowd.appraisals.shape == (6600, 21)
    counts = pd.Series(crowd.labels).value_counts()
    assert counts["neutral"] == 550 and counts["guilt"] == 275 and counts["shame"] == 275
    assert "no-emotion" not in counts
    assert crowd.appraisals.min() == 1 and crowd.appraisals.max() == 5
    # Windows-1252 decoding: no raw C1 control characters such as U+0092 survive.
    assert not any("\x92" in t for t in crowd.texts)
    assert any("\u2019" in t for t in crowd.texts)
    assert crowd.ids[0] == "215"


def test_zip_and_tsv_forms_give_the_same_dataset(tmp_path):
    frame = _toy_frame()
    tsv = frame.to_csv(sep="\t", index=False)
    (tmp_path / "gen.tsv").write_text("\ufeff" + tsv, encoding="utf-8")
    with zipfile.ZipFile(tmp_path / "crowd-enVent2023.zip", "w") as archive:
        archive.writestr("crowd-enVent2023/corpus/crowd-enVent_generation.tsv", tsv)
    from_tsv = load_crowd_envent(tmp_path / "gen.tsv")
    from_zip = load_crowd_envent(tmp_path / "crowd-enVent2023.zip")
    assert from_tsv.fingerprint() == from_zip.fingerprint()
    assert from_tsv.labels[6] == "neutral"


def test_paper_appraisal_preset_keeps_order(tmp_path):
    path = tmp_path / "envent.csv"
    _toy_frame().to_csv(path, index=False)
    ds = load_crowd_envent(path, appraisals="paper")
    assert ds.appraisal_names == PAPER_APPRAISALS
    assert "chance_responsblt" not in ds.appraisal_names


def test_sample_is_seeded_stratified_and_keeps_order(crowd):
    a = crowd.sample(650, seed=3)
    b = crowd.sample(650, seed=3)
    assert a.ids == b.ids and len(a) == 650
    counts = pd.Series(a.labels).value_counts()
    assert counts["anger"] == 55 and counts["shame"] in (27, 28)
    positions = [crowd.ids.index(i) for i in a.ids[:50]]
    assert positions == sorted(positions)
    assert crowd.sample(650, seed=4).ids != a.ids


def test_split_is_stratified_and_disjoint(crowd):
    train, test = crowd.split(0.2, seed=42)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(crowd)
    share = pd.Series(np.array(crowd.labels)[test]).value_counts() / pd.Series(crowd.labels).value_counts()
    assert np.allclose(share.to_numpy(dtype=float), 0.2, atol=0.01)


def test_subset_by_ids_and_mask():
    ds = load_table(_write(_toy_frame()), text="hidden_emo_text", label="emotion", id_column="text_id",
                    label_map={"no-emotion": "neutral"})
    sub = ds.subset(["1003", "1001"])
    assert sub.ids == ["1003", "1001"]
    assert len(ds.subset(np.array([True] * 5 + [False] * 21))) == 5
    with pytest.raises(EmolensError, match="not in dataset"):
        ds.subset(["nope"])


def _write(frame, suffix=".csv"):
    import tempfile

    path = tempfile.mkstemp(suffix=suffix)[1]
    if suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_generic_loader_reads_every_format(suffix):
    frame = pd.DataFrame({"sentence": ["a b", "c d"], "emo": ["joy", "fear"], "pleasantness": [5, 1]})
    ds = load_table(_write(frame, suffix), text="sentence", label="emo", appraisals=["pleasantness"])
    assert ds.texts == ["a b", "c d"] and ds.labels == ["joy", "fear"]
    assert ds.appraisal("pleasantness").tolist() == [5, 1]


def test_bad_tables_are_clear_errors(tmp_path):
    frame = pd.DataFrame({"sentence": ["a"], "emo": ["ecstasy"]})
    with pytest.raises(EmolensError, match="missing column"):
        load_table(_write(frame), text="text", label="emo")
    with pytest.raises(EmolensError, match="unknown labels"):
        load_table(_write(frame), text="sentence", label="emo")
    with pytest.raises(EmolensError, match="does not exist"):
        load_dataset(tmp_path / "absent.csv")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,label\n\x81\x8d\x8f\x90,joy\n")
    with pytest.raises(EmolensError, match="cannot decode"):
        load_table(bad)
    with pytest.raises(EmolensError, match="no column 'story'"):
        load_crowd_envent(_write(_toy_frame()), text_column="story")
    with pytest.raises(EmolensError, match="not a readable zip"):
        (tmp_path / "crowd.zip").write_bytes(b"not a zip")
        load_crowd_envent(tmp_path / "crowd.zip")


def test_failed_download_is_a_clear_error(monkeypatch, tmp_path):
    from emolens.data import corpus as data

    monkeypatch.delenv("EMOLENS_CROWD_ENVENT", raising=False)
    monkeypatch.setenv("EMOLENS_CACHE", str(tmp_path))

    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", refuse)
    with pytest.raises(EmolensError, match="could not download crowd-enVENT"):
        load_crowd_envent()
    assert not list((tmp_path / "data").glob("*.part"))


def test_download_checksum_mismatch_is_refused(monkeypatch, tmp_path):
    from emolens.data import corpus as data

    monkeypatch.delenv("EMOLENS_CROWD_ENVENT", raising=False)
    monkeypatch.setenv("EMOLENS_CACHE", str(tmp_path))
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"tampered"))
    with pytest.raises(EmolensError, match="SHA-256"):
        load_crowd_envent()
    assert not (tmp_path / "data" / "crowd-enVent2023.zip").exists()


def test_env_variable_points_at_the_corpus(monkeypatch, crowd_envent_csv):
    monkeypatch.setenv("EMOLENS_CROWD_ENVENT", str(crowd_envent_csv.parent))
    assert len(load_dataset("crowd-envent")) == 6600


def test_id_list_roundtrip(tmp_path):
    write_ids(tmp_path / "ids.txt", ["1", "22"])
    assert read_ids(tmp_path / "ids.txt") == ["1", "22"]
    with pytest.raises(EmolensError, match="does not exist"):
        read_ids(tmp_path / "none.txt")


def test_dataset_rejects_inconsistent_fields():
    with pytest.raises(EmolensError, match="duplicate item ids"):
        EmotionDataset(ids=["a", "a"], texts=["x", "y"], labels=[None, None], appraisals=np.zeros((2, 0)),
                       appraisal_names=())
