"""The built-in appraisal stimuli: schema, minimal-pair design, counts, loaders and validation."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from emolens.data.corpus import EmotionDataset
from emolens.data.loading import load_dataset
from emolens.data.stimuli import (
    PAIR_COLUMNS,
    banned_words,
    load_schema,
    load_stimuli,
    load_stimulus_pairs,
    resource_path,
    validate_stimuli,
    word_edit_distance,
)
from emolens.errors import EmolensError
from emolens.labels import ALL_APPRAISALS, EMOTIONS, PAPER_APPRAISALS

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = {"work", "family", "health", "friends", "money", "travel"}

# The design the issue asks for, written out independently of the schema file.
MOVES = {
    "responsibility_self_other": {"self_responsblt": "a>b", "other_responsblt": "b>a"},
    "responsibility_self_chance": {"self_responsblt": "a>b", "chance_responsblt": "b>a"},
    "responsibility_other_chance": {"other_responsblt": "a>b", "chance_responsblt": "b>a"},
    "pleasantness": {"pleasantness": "a>b", "unpleasantness": "b>a", "goal_support": "a>b"},
    "suddenness": {"suddenness": "b>a", "predict_event": "a>b"},
    "control": {"self_control": "a>b", "chance_control": "b>a"},
    "norm_violation": {"standards": "a>b", "social_norms": "a>b"},
}
# Forms sharing a lemma with a label (plus the label itself); a text may contain none of them.
LABEL_FORMS = {
    "anger", "angry", "angrily", "angered", "bored", "boring", "boredom", "disgust", "disgusted",
    "disgusting", "fear", "feared", "fearful", "guilt", "guilty", "joy", "joyful", "joyous",
    "neutral", "pride", "proud", "proudly", "relief", "relieved", "sad", "sadly", "sadness",
    "shame", "ashamed", "shameful", "surprise", "surprised", "surprising", "surprisingly",
    "trust", "trusted", "trusting", "trustworthy",
}
MAX_WORD_EDIT = 6


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in resource_path(name).read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return _jsonl("stimuli_pairs.jsonl")


@pytest.fixture(scope="module")
def singles() -> list[dict]:
    return _jsonl("stimuli_singles.jsonl")


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _valid_appraisals(values: dict) -> bool:
    return (list(values) == list(ALL_APPRAISALS)
            and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 5 for v in values.values()))


# ---------------------------------------------------------------------------------------------
# Schema and design


def test_shipped_files_pass_validation(pairs, singles):
    summary = validate_stimuli()
    assert summary["pairs"] == len(pairs) >= 150
    assert summary["singles"] == len(singles)
    assert set(summary["pairs_per_type"]) == set(MOVES)


def test_every_line_matches_the_schema(pairs, singles):
    for p in pairs:
        assert set(p) == {"pair_id", "type", "manipulated", "domain", "frame", "a", "b"}
        assert re.fullmatch(r"pair-\d{3}", p["pair_id"])
        assert p["type"] in MOVES and p["domain"] in DOMAINS
        for member in ("a", "b"):
            m = p[member]
            assert set(m) == {"text", "emotion", "appraisals"}
            assert m["emotion"] in EMOTIONS
            assert _valid_appraisals(m["appraisals"]), p["pair_id"]
    for s in singles:
        assert set(s) == {"id", "emotion", "domain", "text", "appraisals"}
        assert re.fullmatch(rf"single-{s['emotion']}-\d\d", s["id"])
        assert s["domain"] in DOMAINS and _valid_appraisals(s["appraisals"])
    assert len({p["pair_id"] for p in pairs}) == len(pairs)
    assert len({s["id"] for s in singles}) == len(singles)


def test_schema_declares_the_issue_design():
    schema = load_schema()
    declared = {t: rule["direction"] for t, rule in schema["x-pair-types"].items()}
    assert declared == MOVES
    for t, rule in schema["x-pair-types"].items():
        assert sorted(rule["manipulated"]) == sorted(MOVES[t])
        for emotions in rule["frames"].values():
            assert emotions["a"] in EMOTIONS and emotions["b"] in EMOTIONS and emotions["a"] != emotions["b"]
    assert schema["x-max-word-edit"] == MAX_WORD_EDIT
    assert sorted(schema["$defs"]["appraisals"]["required"]) == sorted(ALL_APPRAISALS)


def test_pairs_differ_only_in_their_allowed_columns_and_direction(pairs):
    for p in pairs:
        allowed = MOVES[p["type"]]
        assert sorted(p["manipulated"]) == sorted(allowed), p["pair_id"]
        a, b = p["a"]["appraisals"], p["b"]["appraisals"]
        differing = {k for k in ALL_APPRAISALS if a[k] != b[k]}
        assert differing == set(allowed), (p["pair_id"], differing)
        for column, direction in allowed.items():
            assert (a[column] > b[column]) if direction == "a>b" else (b[column] > a[column]), p["pair_id"]


def test_predicted_emotions_follow_appraisal_theory(pairs):
    expected = {
        ("responsibility_self_other", "harm"): ("guilt", "anger"),
        ("responsibility_self_other", "benefit"): ("pride", "joy"),
        ("responsibility_self_chance", "harm"): ("guilt", "sadness"),
        ("responsibility_self_chance", "benefit"): ("pride", "joy"),
        ("responsibility_other_chance", "harm"): ("anger", "sadness"),
        ("pleasantness", "outcome"): ("joy", "sadness"),
        ("suddenness", "pleasant"): ("joy", "surprise"),
        ("suddenness", "neutral"): ("neutral", "surprise"),
        ("control", "harm"): ("guilt", "sadness"),
        ("norm_violation", "self_public"): ("shame", "neutral"),
        ("norm_violation", "self_private"): ("guilt", "neutral"),
        ("norm_violation", "other"): ("anger", "neutral"),
    }
    for p in pairs:
        assert (p["a"]["emotion"], p["b"]["emotion"]) == expected[(p["type"], p["frame"])], p["pair_id"]
        a = p["a"]["appraisals"]
        if p["frame"] == "harm":
            assert a["unpleasantness"] > a["pleasantness"]
        if p["frame"] in ("benefit", "pleasant"):
            assert a["pleasantness"] > a["unpleasantness"]
        if p["type"] == "norm_violation":
            actor = "other" if p["frame"] == "other" else "self"
            assert a[f"{actor}_responsblt"] == 5 and p["b"]["appraisals"][f"{actor}_responsblt"] == 5


def test_word_edit_distance_counts_whole_words():
    assert word_edit_distance("I forgot to lock the door.", "My roommate forgot to lock the door.") == 2
    assert word_edit_distance("The bank approved it.", "The bank rejected it.") == 1
    assert word_edit_distance("Same words here.", "same words, here") == 0
    assert word_edit_distance("", "one two") == 2


def test_pair_texts_are_minimal_edits(pairs):
    distances = []
    for p in pairs:
        ta, tb = p["a"]["text"], p["b"]["text"]
        d = word_edit_distance(ta, tb)
        assert 1 <= d <= MAX_WORD_EDIT, (p["pair_id"], d)
        # The edit is a local change: outside it, the members share most of their words.
        wa, wb = _tokens(ta), _tokens(tb)
        shared = sum((Counter(wa) & Counter(wb)).values())
        assert shared >= 0.5 * min(len(wa), len(wb)), p["pair_id"]
        distances.append(d)
    assert np.median(distances) <= 3


def test_counts_and_balance(pairs, singles):
    assert len(pairs) >= 150
    per_type = Counter(p["type"] for p in pairs)
    assert set(per_type) == set(MOVES) and min(per_type.values()) >= 20
    for t in MOVES:
        domains = Counter(p["domain"] for p in pairs if p["type"] == t)
        assert set(domains) == DOMAINS, t
        assert max(domains.values()) - min(domains.values()) <= 2, (t, domains)
    per_domain = Counter(p["domain"] for p in pairs)
    assert max(per_domain.values()) - min(per_domain.values()) <= len(MOVES)
    per_emotion = Counter(s["emotion"] for s in singles)
    assert set(per_emotion) == set(EMOTIONS) and min(per_emotion.values()) >= 20
    for emotion in EMOTIONS:
        assert {s["domain"] for s in singles if s["emotion"] == emotion} == DOMAINS, emotion


def test_texts_are_unique_first_person_and_free_of_label_words(pairs, singles):
    texts = [p[m]["text"] for p in pairs for m in ("a", "b")] + [s["text"] for s in singles]
    normalised = [" ".join(_tokens(t)) for t in texts]
    assert len(set(normalised)) == len(texts)
    first_person = {"i", "me", "my", "mine", "myself", "we", "us", "our", "ours"}
    for text in texts:
        tokens = set(_tokens(text))
        assert not tokens & LABEL_FORMS, text
        assert tokens & first_person, text
        assert not banned_words(text), text
        assert text[0].isupper() and text.endswith((".", "!", "?"))


def test_banned_words_catch_label_inflections():
    assert banned_words("I was angry and a bit ashamed.") == ["angry", "ashamed"]
    assert banned_words("It was SURPRISING, frankly.") == ["surprising"]
    assert banned_words("I relied on her and enjoyed the border town.") == []


def test_singles_carry_emotion_typical_design_values(singles):
    by_emotion: dict[str, list[dict]] = {}
    for s in singles:
        by_emotion.setdefault(s["emotion"], []).append(s["appraisals"])

    def mean(emotion: str, column: str) -> float:
        return float(np.mean([v[column] for v in by_emotion[emotion]]))

    for positive in ("joy", "pride", "relief", "trust"):
        assert mean(positive, "pleasantness") > mean(positive, "unpleasantness")
    for negative in ("anger", "disgust", "fear", "guilt", "sadness", "shame"):
        assert mean(negative, "unpleasantness") > mean(negative, "pleasantness")
    assert mean("guilt", "self_responsblt") > mean("anger", "self_responsblt")
    assert mean("anger", "other_responsblt") > mean("guilt", "other_responsblt")
    assert mean("surprise", "suddenness") > mean("boredom", "suddenness")
    assert mean("shame", "social_norms") > mean("joy", "social_norms")


def test_singles_share_one_prototype_per_emotion(singles):
    profiles: dict[str, set] = {}
    for s in singles:
        profiles.setdefault(s["emotion"], set()).add(tuple(s["appraisals"].values()))
    assert all(len(p) == 1 for p in profiles.values())
    assert len({next(iter(p)) for p in profiles.values()}) == len(EMOTIONS)


def test_docs_tables_are_current():
    script = ROOT / "scripts" / "stimuli_table.py"
    if not script.exists() or not (ROOT / "docs" / "stimuli.md").exists():
        pytest.skip("docs or scripts not present (installed package)")
    spec = importlib.util.spec_from_file_location("stimuli_table", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (ROOT / "docs" / "stimuli.md").read_text(encoding="utf-8")
    assert module.render(page) == page, "run scripts/stimuli_table.py"


def test_shipped_jsonl_matches_the_generator():
    spec = importlib.util.spec_from_file_location("make_stimuli", ROOT / "scripts" / "make_stimuli.py")
    if spec is None or not (ROOT / "scripts" / "make_stimuli.py").exists():
        pytest.skip("scripts/make_stimuli.py not present (installed package)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, lines in module.build().items():
        assert _jsonl(name) == lines, name


# ---------------------------------------------------------------------------------------------
# Loaders


def test_load_dataset_stimuli_returns_all_items(pairs, singles):
    ds = load_dataset("stimuli")
    assert isinstance(ds, EmotionDataset)
    assert len(ds) == 2 * len(pairs) + len(singles)
    assert ds.appraisal_names == ALL_APPRAISALS and ds.appraisals.shape == (len(ds), 21)
    assert ds.ids[:2] == ["pair-001-a", "pair-001-b"] and ds.ids[-1].startswith("single-trust-")
    assert set(ds.labels) == set(EMOTIONS)
    assert not np.isnan(ds.appraisals).any()
    meta_columns = {"kind", "pair_id", "member", "partner_id", "type", "manipulated", "domain", "frame"}
    assert meta_columns <= set(ds.meta)
    first = pairs[0]
    row = ds.ids.index(f"{first['pair_id']}-b")
    assert ds.texts[row] == first["b"]["text"] and ds.labels[row] == first["b"]["emotion"]
    assert ds.appraisal("self_responsblt")[row] == first["b"]["appraisals"]["self_responsblt"]
    assert ds.meta.loc[row, "partner_id"] == f"{first['pair_id']}-a"
    assert ds.meta.loc[row, "manipulated"] == "+".join(first["manipulated"])


def test_load_stimuli_kinds_and_presets(pairs, singles):
    only_pairs = load_stimuli("pairs")
    only_singles = load_stimuli("singles")
    assert len(only_pairs) == 2 * len(pairs) and set(only_pairs.meta["kind"]) == {"pair"}
    assert len(only_singles) == len(singles) and set(only_singles.meta["kind"]) == {"single"}
    assert "single-anger-03" in only_singles.ids
    counts = Counter(only_singles.labels)
    assert all(counts[e] >= 20 for e in EMOTIONS)
    paper = load_stimuli("singles", appraisals="paper")
    assert paper.appraisal_names == PAPER_APPRAISALS and paper.appraisals.shape == (len(singles), 20)
    with pytest.raises(EmolensError, match="unknown stimuli kind"):
        load_stimuli("triples")
    with pytest.raises(EmolensError, match="unknown appraisal"):
        load_stimuli("pairs", appraisals=["valence"])


def test_load_stimulus_pairs_for_patching(pairs):
    frame = load_stimulus_pairs()
    assert tuple(frame.columns) == PAIR_COLUMNS
    assert len(frame) == len(pairs)
    ds = load_stimuli("pairs")
    assert set(frame["source_id"]) | set(frame["target_id"]) == set(ds.ids)
    for row, p in zip(frame.itertuples(), pairs, strict=True):
        assert (row.source_id, row.target_id) == (f"{p['pair_id']}-a", f"{p['pair_id']}-b")
        assert (row.source_emotion, row.target_emotion) == (p["a"]["emotion"], p["b"]["emotion"])
        assert row.type == p["type"] and row.domain == p["domain"]
    control = load_stimulus_pairs(types=["control"])
    assert len(control) == sum(p["type"] == "control" for p in pairs) and set(control["type"]) == {"control"}
    with pytest.raises(EmolensError, match="unknown pair type"):
        load_stimulus_pairs(types=["valence"])


# ---------------------------------------------------------------------------------------------
# Validation failures


def _write(tmp_path: Path, pairs: list[dict], singles: list[dict]) -> tuple[Path, Path]:
    pp, sp = tmp_path / "pairs.jsonl", tmp_path / "singles.jsonl"
    pp.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    sp.write_text("".join(json.dumps(s) + "\n" for s in singles))
    return pp, sp


def _copy(items: list[dict]) -> list[dict]:
    return json.loads(json.dumps(items))


def test_validation_accepts_an_untouched_copy(tmp_path, pairs, singles):
    assert validate_stimuli(*_write(tmp_path, pairs, singles))["pairs"] == len(pairs)


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda p, s: p[0]["b"]["appraisals"].__setitem__("urgency", 5), "fixed appraisal"),
        (lambda p, s: p[0].__setitem__("manipulated", ["self_responsblt"]), "manipulated"),
        (lambda p, s: p[0].update(a=p[0]["b"], b=p[0]["a"]), "rule for"),
        (lambda p, s: p[0]["a"].__setitem__("emotion", "joy"), "predicts"),
        (lambda p, s: p[0]["a"]["appraisals"].__setitem__("effort", 6), "outside"),
        (lambda p, s: p[0]["a"]["appraisals"].pop("effort"), "missing field"),
        (lambda p, s: p[0].__setitem__("domain", "school"), "not one of"),
        (lambda p, s: s[0].__setitem__("text", "I was angry that my project went to him."), "names an"),
        (lambda p, s: s[1].__setitem__("text", s[0]["text"]), "duplicates"),
        (lambda p, s: p[0]["b"].__setitem__("text", "Nothing at all like the other member, written "
                                                      "from scratch for this test by me."), "word edits"),
        (lambda p, s: s[0].__setitem__("text", "The parcel arrived at the office on time."), "first person"),
        (lambda p, s: s[0].__setitem__("id", "single-joy-99"), "does not match"),
        (lambda p, s: s.__setitem__(slice(0, 5), []), "below 20"),
        (lambda p, s: p.__setitem__(slice(0, 30), []), "fewer than 150"),
    ],
)
def test_validation_rejects_each_rule(tmp_path, pairs, singles, break_it, message):
    p, s = _copy(pairs), _copy(singles)
    break_it(p, s)
    with pytest.raises(EmolensError, match=message):
        validate_stimuli(*_write(tmp_path, p, s))


def test_validation_rejects_a_reversed_direction(tmp_path, pairs, singles):
    p = _copy(pairs)
    target = next(x for x in p if x["type"] == "pleasantness")
    target["a"]["appraisals"]["goal_support"], target["b"]["appraisals"]["goal_support"] = 1, 5
    with pytest.raises(EmolensError, match="goal_support must satisfy a>b"):
        validate_stimuli(*_write(tmp_path, p, singles))


def test_validation_reports_unparseable_lines(tmp_path, pairs, singles):
    pp, sp = _write(tmp_path, pairs, singles)
    pp.write_text(pp.read_text() + "{not json\n")
    with pytest.raises(EmolensError, match=r"pairs.jsonl:\d+: not valid JSON"):
        validate_stimuli(pp, sp)
