"""Study pipeline: config validation, presets, cached and resumable stages, refusal, report, compare."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from emolens.cli.app import main
from emolens.errors import EmolensError
from emolens.study import data_choice, registry, runner
from emolens.study.config import config_from_dict, load_config, load_preset
from emolens.study.stages import STAGES
from emolens.study.stages.robustness import ROBUSTNESS_COLUMNS

BASE = {
    "name": "tiny",
    "models": ["tiny:llama"],
    "dataset": {"spec": "stimuli", "limit": 26, "seed": 0},
    "prompts": {"variants": "paper"},
    "stages": ["readout", "extract", "probe", "robustness"],
    "probe": {"n_boot": 20, "human_baseline": False},
    "robustness": {"limit": 13},
    "batch_size": 16,
}


def cfg_with(root: Path, **changes) -> object:
    data = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    data["output"] = str(root)
    return config_from_dict(data, "test.yaml")


def statuses(result) -> dict[str, str]:
    return {o.stage: o.status for o in result.outcomes}


def quiet(*_args, **_kwargs) -> None:
    pass


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cfg = cfg_with(root)
    result = runner.run_study(cfg, progress=False, echo=quiet)
    return cfg, result


# ---------------------------------------------------------------------------------- config


def test_config_errors_name_the_key(tmp_path, capsys):
    with pytest.raises(EmolensError, match=r"unknown key 'dataset\.limt'"):
        config_from_dict({"dataset": {"limt": 3}}, "x.yaml")
    with pytest.raises(EmolensError, match=r"'patch\.spans'"):
        config_from_dict({"patch": {"spans": [2]}}, "x.yaml")
    with pytest.raises(EmolensError, match=r"'steer\.emotions'"):
        config_from_dict({"steer": {"emotions": ["rage"]}}, "x.yaml")
    path = tmp_path / "bad.yaml"
    path.write_text("models: [tiny:llama]\nprobe:\n  protocl: cv\n")
    with pytest.raises(SystemExit) as exc:
        main(["run", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "probe.protocl" in err[0]
    path.write_text("models: [tiny:llama\n")
    with pytest.raises(EmolensError, match="not valid YAML"):
        load_config(path)


def test_presets_load():
    quick, paper = load_preset("quick"), load_preset("paper")
    assert paper.items == "correct" and paper.positions == [-1, -2, -3, -4, -5]
    assert paper.patch.spans == [1, 3, 5] and paper.patch.pairs == 200 and paper.steer.betas == [1, 2, 4]
    assert paper.ablate.spans == [1, 3] and paper.prompts.variants == "paper" and "robustness" in paper.stages
    assert paper.sites == ["attn", "mlp", "resid"] and paper.layers == "all"
    assert paper.steer.scale == "unit" and quick.steer.scale == "relative"  # the paper's raw beta; quick: visible
    assert quick.dataset.fallback == "stimuli" and quick.positions == [-1]
    assert quick.fingerprint() != paper.fingerprint()
    derived = config_from_dict({"base": "quick", "probe": {"C": 0.5}})
    assert derived.probe.C == 0.5 and derived.ablate.stride == quick.ablate.stride


def test_unknown_backend_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--backend", "dask"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown backend 'dask'" in err[0]


# ---------------------------------------------------------------------------------- runs


def test_run_writes_stages_and_report(base_run):
    cfg, result = base_run
    assert statuses(result) == {s: "done" for s in cfg.stages}
    run_dir = result.run_dir
    assert run_dir.name.startswith("tiny-")
    for stage in cfg.stages:
        rec = json.loads((run_dir / "tiny-llama" / stage / "stage.json").read_text())
        assert rec["status"] == "done" and rec["seconds"] >= 0 and len(rec["key"]) == 64
    assert (run_dir / "tiny-llama/readout/readout.parquet").exists()
    assert (run_dir / "tiny-llama/probe/probes.parquet").exists()
    assert len(pd.read_parquet(run_dir / "tiny-llama/robustness/robustness.parquet").variant.unique()) == 9
    html = (run_dir / "report.html").read_text()
    assert "data:image/png;base64," in html and "<script" not in html and "http" not in html
    assert "the ablate stage was not requested" in html  # absent sections say so
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["models"]["tiny-llama"]["n_layers"] == 3


def test_every_stage_records_its_model_work_against_the_plain_forward_floor(base_run):
    """The readout's work is derived from its batches: the P template tokens every prompt shares run
    once, then one forward per batch over B x (T - P) tokens, each in the 3 layers, of which the
    batch's left pads are padding; the probe stage runs no model; run.json, stage.json and the
    report carry it."""
    from emolens.engine.shared_prefix import shared_prefix_length
    from emolens.inputs.batching import iter_batches
    from emolens.inputs.prompts import build_prompts
    from emolens.model.loading import load_model

    cfg, result = base_run
    run_dir = result.run_dir
    work = {s: json.loads((run_dir / "tiny-llama" / s / "stage.json").read_text())["work"] for s in cfg.stages}
    data = result.data.dataset
    lm = load_model("tiny:llama")
    spec = dataclasses.replace(cfg.prompt_spec(), labels=tuple(data.label_names))
    prompts = build_prompts(data.texts, spec, lm.tokenizer)
    batches = list(iter_batches(lm.tokenizer, prompts, 16, lm.device, pack=True))  # as a readout reads
    shapes = [tuple(b.input_ids.shape) for b in batches]
    P = shared_prefix_length(lm.tokenizer([p.text for p in prompts])["input_ids"])
    assert P > 5  # the template's instruction and shots
    assert work["readout"]["forwards"] == 1 + len(shapes)
    assert work["readout"]["token_layers"] == (P + sum(B * (T - P) for B, T in shapes)) * 3
    pads = sum(int((b.attention_mask == 0).sum()) for b in batches)
    assert pads > 0 and work["readout"]["pad_token_layers"] == pads * 3
    assert work["probe"]["forwards"] == work["probe"]["token_layers"] == 0
    for w in work.values():
        assert w["floor_rate"] > 0 and w["seconds"] > 0
        assert w["floor_s"] == pytest.approx(w["token_layers"] / w["floor_rate"], rel=1e-3, abs=1e-4)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["stages"]["tiny-llama"]["readout"]["work"]["forwards"] == 1 + len(shapes)
    html = (run_dir / "report.html").read_text()
    assert "Model work per stage" in html and "token_layers" in html and "<th>padding</th>" in html


def test_rerun_skips_cached_stages(base_run):
    cfg, first = base_run
    before = {s: json.loads((first.run_dir / "tiny-llama" / s / "stage.json").read_text()) for s in cfg.stages}
    again = runner.run_study(cfg, progress=False, echo=quiet, report=False)
    assert again.run_dir == first.run_dir
    assert statuses(again) == {s: "cached" for s in cfg.stages}
    after = {s: json.loads((first.run_dir / "tiny-llama" / s / "stage.json").read_text()) for s in cfg.stages}
    assert before == after


def test_results_of_other_code_are_neither_cached_nor_reused(tmp_path, monkeypatch):
    """The version string stays the same while a checkout is edited: the stage key's code fingerprint
    keeps a run from taking (cached, or reused from a sibling run) what other code computed."""
    from emolens.study import pipeline
    from emolens.study.run_folder import code_fingerprint

    assert len(code_fingerprint()) == 64 and code_fingerprint() == code_fingerprint()
    cfg = cfg_with(tmp_path, stages=["readout"])
    first = runner.run_study(cfg, progress=False, echo=quiet, report=False)
    assert statuses(first) == {"readout": "done"}
    record = json.loads((first.run_dir / "tiny-llama/readout/stage.json").read_text())
    assert record["code"] == code_fingerprint()
    assert statuses(runner.run_study(cfg, progress=False, echo=quiet, report=False)) == {"readout": "cached"}

    monkeypatch.setattr(pipeline, "code_fingerprint", lambda: "edited")
    again = runner.run_study(cfg, progress=False, echo=quiet, report=False)
    assert statuses(again) == {"readout": "done"}  # same folder, other code: computed again
    assert list((first.run_dir / "tiny-llama/.superseded").iterdir())  # the old result kept aside
    sibling = cfg_with(tmp_path, stages=["readout"], probe={"C": 0.5})  # another run folder, same readout
    assert statuses(runner.run_study(sibling, progress=False, echo=quiet, report=False)) == {"readout": "reused"}
    monkeypatch.setattr(pipeline, "code_fingerprint", lambda: "edited again")
    other = cfg_with(tmp_path, stages=["readout"], probe={"C": 0.25})
    assert statuses(runner.run_study(other, progress=False, echo=quiet, report=False)) == {"readout": "done"}


def test_changed_value_reruns_only_affected_stages(base_run):
    cfg, first = base_run
    changed = cfg_with(Path(cfg.output), probe={"C": 0.5})
    result = runner.run_study(changed, progress=False, echo=quiet, report=False)
    assert result.run_dir != first.run_dir  # a new run folder: the old results stay as they were
    assert statuses(result) == {"readout": "reused", "extract": "reused", "probe": "done", "robustness": "reused"}
    old = pd.read_parquet(first.run_dir / "tiny-llama/readout/readout.parquet")
    new = pd.read_parquet(result.run_dir / "tiny-llama/readout/readout.parquet")
    pd.testing.assert_frame_equal(old, new)


def test_out_holding_another_study_is_refused(base_run, capsys):
    cfg, first = base_run
    other = cfg_with(Path(cfg.output), probe={"C": 2.0})
    with pytest.raises(EmolensError, match="different study"):
        runner.run_study(other, out=first.run_dir, progress=False, echo=quiet)
    path = Path(cfg.output) / "other.yaml"
    path.write_text(json.dumps({**BASE, "seed": 7, "output": cfg.output}))
    with pytest.raises(SystemExit) as exc:
        main(["run", str(path), "--out", str(first.run_dir), "--no-progress"])
    assert exc.value.code == 2
    assert "different study" in capsys.readouterr().err


def _copy_without(first, stage: str, root: Path) -> Path:
    """The finished base run copied to a fresh root (no siblings to reuse from), minus one stage."""
    target = root / first.run_dir.name
    shutil.copytree(first.run_dir, target)
    shutil.rmtree(target / "tiny-llama" / stage)
    return target


@pytest.mark.parametrize("run, kill_after", [("base_run", 3), ("robust_run", 2)])
def test_kill_resumable_stage_then_resume_gives_identical_results(run, kill_after, request, tmp_path, monkeypatch):
    """Robustness keeps its finished variants: readout only (base_run), and with the probe, zero
    ablation and patching re-run per variant (robust_run)."""
    cfg, first = request.getfixturevalue(run)
    run_dir = _copy_without(first, "robustness", tmp_path)
    seen = []

    def interrupt(ctx, unit):
        seen.append(unit)
        if len(seen) == kill_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(registry, "after_unit", interrupt)
    with pytest.raises(KeyboardInterrupt):
        runner.run_study(cfg, out=run_dir, progress=False, echo=quiet, report=False)
    folder = run_dir / "tiny-llama/robustness"
    assert not (folder / "stage.json").exists()
    assert len(list((folder / "partial").glob("*.parquet"))) == kill_after
    monkeypatch.setattr(registry, "after_unit", lambda ctx, unit: seen.append(unit))
    result = runner.run_study(cfg, out=run_dir, progress=False, echo=quiet, report=False)
    assert statuses(result)["robustness"] == "done" and statuses(result)["probe"] == "cached"
    assert len(seen) == 9  # only the unfinished variants were computed on resume
    assert json.loads((folder / "stage.json").read_text())["resumed"] is True
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "robustness.parquet"),
                                  pd.read_parquet(first.run_dir / "tiny-llama/robustness/robustness.parquet"))


def test_kill_plain_stage_clears_and_redoes_it(base_run, tmp_path, monkeypatch):
    cfg, first = base_run
    run_dir = _copy_without(first, "probe", tmp_path)
    sdef = STAGES["probe"]
    real = sdef.run

    def half_then_die(ctx):
        (ctx.dir / "probes.parquet").write_text("half-written")
        raise KeyboardInterrupt

    monkeypatch.setattr(sdef, "run", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        runner.run_study(cfg, out=run_dir, progress=False, echo=quiet, report=False)
    assert not (run_dir / "tiny-llama/probe/stage.json").exists()
    monkeypatch.setattr(sdef, "run", real)
    result = runner.run_study(cfg, out=run_dir, progress=False, echo=quiet, report=False)
    assert statuses(result)["probe"] == "done"
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "tiny-llama/probe/probes.parquet"),
                                  pd.read_parquet(first.run_dir / "tiny-llama/probe/probes.parquet"))


def test_unavailable_stage_is_reported_not_faked(base_run, tmp_path, monkeypatch):
    cfg, first = base_run
    run_dir = _copy_without(first, "robustness", tmp_path)
    monkeypatch.setattr(STAGES["robustness"], "modules", ("emolens.not_landed_yet",))
    result = runner.run_study(cfg, out=run_dir, progress=False, echo=quiet)
    outcome = next(o for o in result.outcomes if o.stage == "robustness")
    assert outcome.status == "unavailable" and "not available" in outcome.note
    assert not (run_dir / "tiny-llama/robustness").exists()
    assert "not available: module emolens.not_landed_yet" in (run_dir / "report.html").read_text()


def test_dataset_fallback_only_for_an_unreachable_default_corpus(monkeypatch, tmp_path, capsys):
    import emolens.data.corpus as data

    monkeypatch.delenv("EMOLENS_CROWD_ENVENT", raising=False)
    monkeypatch.setenv("EMOLENS_CACHE", str(tmp_path / "cache"))

    def unreachable(*_args, **_kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", unreachable)
    cfg = config_from_dict({"dataset": {"spec": "crowd-envent", "limit": 20, "fallback": "stimuli"}})
    resolved = data_choice.resolve_dataset(cfg)
    assert len(resolved.dataset) == 20 and "because crowd-envent is not reachable" in resolved.how
    assert "emolens: warning: data: using the FALLBACK" in capsys.readouterr().err  # announced on stderr
    assert resolved.fallback_reason and "could not download" in resolved.fallback_reason
    with pytest.raises(EmolensError, match="could not download"):
        data_choice.resolve_dataset(config_from_dict({"dataset": {"spec": "crowd-envent"}}))
    # your own data never falls back, even with base: quick's fallback inherited
    bad = tmp_path / "mine.csv"
    bad.write_text("text,label\nI won.,ecstasy\n")
    for spec, message in [(str(tmp_path / "absent.csv"), "does not exist"), (str(bad), "unknown labels")]:
        own = config_from_dict({"base": "quick", "dataset": {"spec": spec}})
        assert own.dataset.fallback == "stimuli"
        with pytest.raises(EmolensError, match=message):
            data_choice.resolve_dataset(own)


def test_fallback_is_recorded_in_run_json_and_the_report_head(tmp_path, monkeypatch):
    import emolens.data.corpus as data

    monkeypatch.delenv("EMOLENS_CROWD_ENVENT", raising=False)
    monkeypatch.setenv("EMOLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    cfg = cfg_with(tmp_path, dataset={"spec": "crowd-envent", "limit": 13, "fallback": "stimuli"}, stages=["readout"])
    result = runner.run_study(cfg, progress=False, echo=quiet)
    meta = json.loads((result.run_dir / "run.json").read_text())
    assert "could not download" in meta["dataset"]["fallback_reason"]
    html = (result.run_dir / "report.html").read_text()
    assert html.index("Fallback data:") < html.index("<h2>")


def test_second_study_process_on_a_run_folder_is_refused(tmp_path):
    import socket
    import subprocess
    import sys

    from emolens.locks import LOCK_NAME

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                     "since": "now", "what": "run folder"}))
        with pytest.raises(EmolensError, match=f"run folder .* is being written by pid {holder.pid}"):
            runner.run_study(cfg_with(tmp_path, stages=["readout"]), out=run_dir, progress=False, echo=quiet)
    finally:
        holder.kill()
        holder.wait()


def test_compare_two_runs(base_run, tmp_path):
    cfg, first = base_run
    second = runner.run_study(cfg_with(Path(cfg.output), probe={"C": 0.5}), progress=False, echo=quiet,
                                report=False)
    out = tmp_path / "cmp"
    main(["compare", str(first.run_dir), str(second.run_dir), "--out", str(out)])
    assert (out / "compare.png").stat().st_size > 1000
    peaks = pd.read_csv(out / "peaks.csv")
    assert set(peaks.analysis) >= {"probe_best"} and peaks.relative_depth.between(0, 1).all()
    with pytest.raises(EmolensError, match="not an emolens run"):
        from emolens.report.compare import compare_runs

        compare_runs([tmp_path], tmp_path / "x")


def test_compare_measures_how_alike_two_studied_models_represent_emotions(tmp_path):
    """``emolens compare`` on a two-model study: CKA, RSA and transfer of the pair from the runs' own
    stores, equal to the crossmodel library on those stores; a model without a store says why."""
    from emolens.crossmodel.compare import compare_models, from_store
    from emolens.labels import EMOTIONS

    cfg = cfg_with(tmp_path, models=["tiny:llama", "tiny:qwen2"], items="all", stages=["readout", "extract"],
                   dataset={"limit": 39}, prompts={"variants": "none"}, sites=["resid"])
    result = runner.run_study(cfg, progress=False, echo=quiet, report=False)
    bare = runner.run_study(cfg_with(tmp_path / "bare", models=["tiny:gemma3_text"], stages=["readout"],
                                     dataset={"limit": 39}), progress=False, echo=quiet, report=False)
    out = tmp_path / "cmp"
    main(["compare", str(result.run_dir), str(bare.run_dir), "--out", str(out), "--boot", "20",
          "--permutations", "99"])
    page = (out / "compare.html").read_text()
    assert "Representational similarity" in page and "39 shared items" in page
    assert "Not measured" in page and "no finished extract stage" in page
    got = {name: pd.read_parquet(next(out.glob(f"similarity_*/{name}.parquet"))) for name in ("cka", "rsa")}
    data = data_choice.resolve_dataset(cfg).dataset
    models = json.loads((result.run_dir / "run.json").read_text())["models"]
    order = sorted(models, key=lambda m: (models[m]["n_layers"], models[m]["spec"]))  # compare's model order
    acts = [from_store(result.run_dir / slug / "extract" / "store", data, models[slug]["spec"],
                       models[slug]["n_layers"]) for slug in order]
    want = compare_models(*acts, EMOTIONS, n_perm=99, n_boot=20, seed=0)
    np.testing.assert_allclose(got["cka"]["cka"], want["cka"]["cka"])
    np.testing.assert_allclose(got["cka"]["cka_lo"], want["cka"]["cka_lo"])
    np.testing.assert_allclose(got["rsa"]["rho"], want["rsa"]["rho"])
    assert got["rsa"]["p_holm"].between(0, 1).all() and (got["rsa"]["p_holm"] >= got["rsa"]["p"]).all()
    with pytest.raises(SystemExit) as exc:  # the page marks a finished result
        main(["compare", str(result.run_dir), "--out", str(out)])
    assert exc.value.code == 2
    (out / "compare.html").unlink()  # a compare that stopped before its page is not a finished result
    main(["compare", str(bare.run_dir), "--out", str(out)])
    assert (out / "compare.html").exists()


def test_compare_of_one_model_loads_no_data(base_run, monkeypatch):
    from emolens.report.runs import model_runs
    from emolens.study import similarity

    def refuse(*_args, **_kwargs):
        raise AssertionError("a single model has no pair: its store and data must not be loaded")

    monkeypatch.setattr(similarity, "model_activations", refuse)
    _, first = base_run
    assert similarity.pair_similarity(model_runs(first.run_dir)) == []


def test_failed_stage_is_recorded_and_the_rest_runs(base_run, tmp_path, monkeypatch):
    cfg, first = base_run
    run_dir = _copy_without(first, "probe", tmp_path)

    def boom(ctx):
        raise RuntimeError("probe exploded")

    monkeypatch.setattr(STAGES["probe"], "run", boom)
    result = runner.run_study(cfg, out=run_dir, progress=False, echo=quiet, report=False)
    assert statuses(result) == {"readout": "cached", "extract": "cached", "probe": "failed", "robustness": "cached"}
    assert "probe exploded" in (run_dir / "tiny-llama/probe/error.txt").read_text()
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["stages"]["tiny-llama"]["probe"]["status"] == "failed"


def test_readout_only_change_keeps_downstream_with_all_items(base_run):
    cfg, first = base_run
    changed = cfg_with(Path(cfg.output), prompts={"variants": "paper", "calibrate": True})
    result = runner.run_study(changed, progress=False, echo=quiet, report=False)
    assert statuses(result) == {"readout": "done", "extract": "reused", "probe": "reused", "robustness": "reused"}


def test_probe_stage_is_the_emolens_probe_path(base_run, tmp_path, run_cli):
    """The study's probe stage and ``emolens probe`` on its store are one code path: same table."""
    cfg, first = base_run
    stage = first.run_dir / "tiny-llama/probe"
    out = tmp_path / "probe"
    code, _, err = run_cli(["probe", "--acts", str(first.run_dir / "tiny-llama/extract/store"), "--out", str(out),
                            "--task", "emotion,appraisal", "--items", "all", "--n-boot", str(cfg.probe.n_boot),
                            "--seed", str(cfg.seed + 42), "--max-iter", str(cfg.probe.max_iter), "--no-directions"])
    assert code == 0, err
    cli = pd.read_parquet(out / "probes.parquet")
    cli = cli[cli.task != "human_baseline"].reset_index(drop=True)  # the study turned the baseline off
    ours = pd.read_parquet(stage / "probes.parquet")
    assert set(ours.task) == {"emotion", "emotion/shuffled", "appraisal", "appraisal/shuffled"}
    pd.testing.assert_frame_equal(ours, cli)
    summary = json.loads((stage / "summary.json").read_text())  # the stage writes emolens probe's outputs
    assert summary["items"]["mode"] == "all" and summary["items"]["n_used"] == 26
    assert (stage / "directions.safetensors").exists() and (stage / "items.txt").read_text().count("\n") == 26
    # one drawing function (report.probe_figures) after both: the same figures, byte for byte
    figures = sorted(p.name for p in stage.glob("*.png"))
    assert figures and figures == sorted(p.name for p in out.glob("*.png"))
    for name in figures:
        assert (stage / name).read_bytes() == (out / name).read_bytes(), name
    assert (first.run_dir / "tiny-llama/readout/confusion.png").stat().st_size > 1000  # as emolens readout draws it


def test_probe_standardize_is_emolens_probe_standardize(base_run, tmp_path, run_cli):
    """``probe.standardize`` is ``emolens probe --standardize`` on the same store."""
    cfg, first = base_run
    changed = cfg_with(Path(cfg.output), stages=["readout", "extract", "probe"],
                       probe={"n_boot": 20, "human_baseline": False, "standardize": True})
    result = runner.run_study(changed, progress=False, echo=quiet, report=False)
    assert statuses(result)["extract"] in ("reused", "cached") and statuses(result)["probe"] == "done"
    out = tmp_path / "probe"
    code, _, err = run_cli(["probe", "--acts", str(result.run_dir / "tiny-llama/extract/store"), "--out", str(out),
                            "--task", "emotion,appraisal", "--items", "all", "--n-boot", "20", "--standardize",
                            "--seed", str(cfg.seed + 42), "--max-iter", str(cfg.probe.max_iter), "--no-directions"])
    assert code == 0, err
    cli = pd.read_parquet(out / "probes.parquet")
    cli = cli[cli.task != "human_baseline"].reset_index(drop=True)
    ours = pd.read_parquet(result.run_dir / "tiny-llama/probe/probes.parquet")
    pd.testing.assert_frame_equal(ours, cli)
    raw = pd.read_parquet(first.run_dir / "tiny-llama/probe/probes.parquet")
    assert not np.allclose(ours.value.to_numpy(dtype=float), raw.value.to_numpy(dtype=float), equal_nan=True)
    assert not load_preset("quick").probe.standardize and not load_preset("paper").probe.standardize


def test_report_summary_survives_all_nan_tables():
    """Undefined metrics (e.g. patching transfer when no pair's clean readouts differ, as on a random
    model) leave their finding out instead of crashing the report."""
    import numpy as np

    from emolens.report.findings import findings, summary_text
    from emolens.report.runs import ModelRun

    nan = [np.nan, np.nan]
    tables = {
        "patch": pd.DataFrame({"analysis": "patch", "site": ["attn", "attn"], "window_center": [1, 2],
                               "metric": ["transfer", "transfer"], "value": nan, "position": [-1, -1],
                               "head": nan}),
        "probe": pd.DataFrame({"task": "emotion", "target": "emotion", "site": ["resid", "resid"], "layer": [0, 1],
                               "position": [-1, -1], "metric": "accuracy", "value": nan, "ci_low": nan,
                               "ci_high": nan, "chance": [0.1, 0.1]}),
    }

    class Run(ModelRun):
        def table(self, name):
            return tables.get(name)

        def json(self, stage, name):
            return None

    found = findings(Run(Path("."), "m", {"models": {"m": {"spec": "m", "n_layers": 4}}}))
    assert "probe_best" not in found and found["patch_peak"]["sites"] == {}
    assert isinstance(summary_text(found), str)


def test_the_knockout_finding_names_the_source_it_reports():
    """Knockout tables hold one curve per key source; the summary reports the context source when
    there is one (whatever order the config listed them in), else names the source it reports."""
    from emolens.report.findings import findings, summary_text
    from emolens.report.runs import ModelRun

    def table(kinds):
        rows = []
        for kind, dip in kinds:
            for w in (1, 2, 3):
                rows.append({"analysis": "knockout", "kind": kind, "site": "attn_edge", "window_center": w,
                             "metric": "agreement", "value": 0.2 if w == dip else 0.9, "position": -1,
                             "head": np.nan})
        return pd.DataFrame(rows)

    def found(kinds):
        class Run(ModelRun):
            def table(self, name):
                return table(kinds) if name == "knockout" else None

            def json(self, stage, name):
                return None

        return findings(Run(Path("."), "m", {"models": {"m": {"spec": "m", "n_layers": 4}}}))

    f = found([("keys=instruction", 3), ("keys=context", 1)])
    assert f["knockout_dip"]["sites"]["attn_edge"] == {"layer": 1, "value": 0.2, "kind": "keys=context"}
    assert "answer-cue to context attention" in summary_text(f)
    f = found([("keys=shots", 2), ("keys=instruction", 3)])
    assert f["knockout_dip"]["sites"]["attn_edge"]["layer"] == 2
    assert "answer-cue to shots attention" in summary_text(f)


# ---------------------------------------------------------------------------------- steer stage


STEER = {"stages": ["readout", "extract", "probe", "steer"], "prompts": {"variants": "none"},
         "steer": {"span": 1, "betas": [2.0, 8.0], "emotions": ["joy"], "directions": ["diffmean"],
                   "appraisals": ["pleasantness+", "other_responsblt-"], "generations": 1, "n_random": 19,
                   "n_emotion_null": 3}}


@pytest.fixture(scope="module")
def steer_run(tmp_path_factory):
    cfg = cfg_with(tmp_path_factory.mktemp("steer"), **STEER)
    result = runner.run_study(cfg, progress=False, echo=quiet)
    return cfg, result


def test_steer_stage_fits_on_the_fit_split_and_measures_held_out_items(steer_run):
    """The stage's defaults are emolens steer's: a seeded label-stratified half fits the directions
    (from the extract store's residuals), the other half is steered, 19 random directions."""
    import torch

    from emolens.steering.directions import bank_from_file, bank_from_store
    from emolens.steering.sweep import fit_split

    cfg, result = steer_run
    assert statuses(result)["steer"] == "done"
    assert cfg.steer.holdout == 0.5 and cfg.steer.gen_position == "generated"
    assert config_from_dict({}, "x.yaml").steer.n_random == 99  # the default; this run asks for 19
    folder = result.run_dir / "tiny-llama/steer"
    table = pd.read_parquet(folder / "steering.parquet")
    assert set(table.fit) == {"heldout"}
    assert table[table.kind == "random"].direction.nunique() == 19
    info = json.loads((folder / "summary.json").read_text())["methods"]["diffmean"]
    fit, held = fit_split(result.data.dataset, 0.5, cfg.seed)
    assert info["fit_ids"] == list(fit.ids) and info["steered_ids"] == list(held.ids)
    assert not set(info["fit_ids"]) & set(info["steered_ids"]) and len(info["fit_ids"]) == 13
    # the directions are the fit split's diff-of-means, taken from the extract store
    bank = bank_from_store(result.run_dir / "tiny-llama/extract/store", fit, [0, 1, 2], "diffmean")
    full = bank_from_store(result.run_dir / "tiny-llama/extract/store", result.data.dataset, [0, 1, 2],
                              "diffmean")
    rec = json.loads((folder / "stage.json").read_text())
    assert rec["summary"]["fit"] == ["heldout"] and rec["summary"]["n_fit"] == 13
    assert not any("captured" in n for n in rec["notes"])  # the store served the fit split and the nulls
    used = bank_from_file(folder / "directions.safetensors", "diffmean")
    assert {"joy", "pleasantness", "other_responsblt"} <= set(used.names) <= set(bank.names)
    for name in used.names:
        assert torch.equal(used.get(name), bank.get(name))
    assert not torch.equal(bank.get("pleasantness"), full.get("pleasantness"))


def test_steer_stage_best_alignment_and_generations_in_the_best_window(steer_run):
    cfg, result = steer_run
    folder = result.run_dir / "tiny-llama/steer"
    align = pd.read_parquet(folder / "alignment.parquet")
    best = align[(align.metric == "best_alignment") & (align.reference == "ratings")]
    assert len(best) == 1 and best.n_settings.iloc[0] == 6 and best.n_random.iloc[0] == 19  # 3 windows x 2 betas
    beyond = align[(align.metric == "best_alignment_beyond_emotion") & (align.reference == "ratings")]  # 3 refits
    assert len(beyond) == 1 and beyond.n_emotion_null.iloc[0] == 3 and beyond.null.iloc[0] == "emotion"
    assert 0.25 - 1e-12 <= beyond.p_value.iloc[0] <= 1
    summary = json.loads((folder / "stage.json").read_text())["summary"]
    headline = summary["alignment_headline"]
    assert "vs 19 random directions" in headline and "within-emotion" in headline
    # the reference counts every study item, not the model's correct ones
    assert sum(summary["reference_n_per_emotion"].values()) == len(result.data.dataset)
    table = pd.read_parquet(folder / "steering.parquet")
    assert set(table.scale) == {cfg.steer.scale}  # the configured scale reaches the sweep
    assert 0.05 - 1e-12 <= best.p_value.iloc[0] <= 1
    per = align[(align.metric == "alignment") & (align.reference == "ratings")].dropna(subset=["value"])
    tops = {(int(w), float(b)) for w, b in per.loc[per.value == per.value.max(), ["window", "beta"]].to_numpy()}
    assert best.value.iloc[0] == per.value.max() and (int(best.window.iloc[0]), float(best.beta.iloc[0])) in tops
    gens = pd.read_parquet(folder / "generations.parquet")
    steered = gens[gens.kind != "clean"]
    assert set(steered.position) == {"generated"}
    setting = set(zip(steered.window.astype(int), steered.beta.astype(float), strict=True))
    assert len(setting) == 1 and setting <= tops  # the generations steer in the best-aligned window and beta
    assert set(steered.kind) == {"real", "specificity", "random"} and (steered.kind == "random").sum() == 1
    assert {"guard_flags", "degenerate", "code"} <= set(gens.columns)
    assert set(gens.id) <= set(json.loads((folder / "summary.json").read_text())["methods"]["diffmean"]["steered_ids"])
    rec = json.loads((folder / "stage.json").read_text())["summary"]
    assert tuple(rec["generation_window_beta"]) in setting and rec["generation_position"] == "generated"
    html = (result.run_dir / "report.html").read_text()
    assert "Best theory alignment" in html and "fit = heldout" in html and "19 norm-matched random" in html
    # one fit item per emotion: nothing varies beyond the emotion, so no residualised direction -- said, not faked
    assert (align.reference == "ratings").all() and "residualised" not in set(table.kind)
    notes = json.loads((folder / "stage.json").read_text())["notes"]
    assert any("residualised on emotion" in n for n in notes)
    assert "flagged by the fluency guard" in html and "<th>guard_flags</th>" in html


def test_steer_stage_and_cli_write_identical_tables(steer_run, tmp_path):
    """One orchestration: ``emolens steer`` with the stage's settings and the stage's extract store
    writes the very same tables (and directions) as the study's steer stage."""
    from safetensors.torch import load_file

    cfg, result = steer_run
    folder = result.run_dir / "tiny-llama/steer"
    out = tmp_path / "cli"
    main(["steer", "--model", "tiny:llama", "--data", "stimuli", "--limit", "26", "--seed", str(cfg.seed),
          "--direction", "joy+;pleasantness+;other_responsblt-", "--method", "diffmean", "--windows", "all",
          "--span", "1", "--beta", "2,8", "--scale", cfg.steer.scale, "--n-random", str(cfg.steer.n_random),
          "--n-emotion-null", str(cfg.steer.n_emotion_null),
          "--holdout", str(cfg.steer.holdout), "--generate", "1", "--batch-size", str(cfg.batch_size),
          "--acts", str(result.run_dir / "tiny-llama/extract/store"), "--out", str(out)])
    for name in ("steering.parquet", "alignment.parquet", "alignment_cells.parquet", "generations.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), pd.read_parquet(folder / name), obj=name)
    a, b = load_file(out / "directions.safetensors"), load_file(folder / "directions.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_steer_stage_holdout_zero_steers_the_fitted_items(steer_run, tmp_path):
    """holdout: 0 is the paper's setting: the probe stage's directions (fitted on every item)."""
    cfg, _ = steer_run
    changed = cfg_with(tmp_path, **{**STEER, "steer": {**STEER["steer"], "holdout": 0, "generations": 0,
                                                       "n_random": 2}})
    result = runner.run_study(changed, progress=False, echo=quiet, report=False)
    table = pd.read_parquet(result.run_dir / "tiny-llama/steer/steering.parquet")
    assert set(table.fit) == {"all"} and table[table.kind == "random"].direction.nunique() == 2
    assert (table.n == 26).all()


def test_steer_config_keys():
    with pytest.raises(EmolensError, match=r"'steer\.holdout'"):
        config_from_dict({"steer": {"holdout": 1.0}})
    with pytest.raises(EmolensError, match=r"unknown key 'steer\.random_controls'"):
        config_from_dict({"steer": {"random_controls": 3}})
    quick, paper = load_preset("quick"), load_preset("paper")
    # 99 covariance-matched random directions let a permutation p reach 0.01 (issue 12)
    assert quick.steer.n_random == paper.steer.n_random == 99 and paper.steer.holdout == 0.5
    assert quick.steer.n_emotion_null == 19 and paper.steer.n_emotion_null == 99
    assert paper.robustness.analyses == ["probe", "ablate", "patch"] and quick.robustness.analyses == []
    assert "robustness" in quick.stages and quick.prompts.variants == "paper"


# ---------------------------------------------------------------------------------- robustness analyses


ROBUST = {"stages": ["readout", "extract", "probe", "ablate", "patch", "robustness"],
          "sites": ["attn", "resid"],
          "probe": {"n_boot": 20, "human_baseline": False, "appraisals": "none"},
          "ablate": {"kinds": ["zero"], "spans": [1]}, "patch": {"spans": [1], "pairs": 8},
          "robustness": {"limit": 0, "analyses": ["probe", "ablate", "patch"], "sites": ["attn"], "spans": [1],
                         "pairs": 8}}


@pytest.fixture(scope="module")
def robust_run(tmp_path_factory):
    cfg = cfg_with(tmp_path_factory.mktemp("robust"), **ROBUST)
    return cfg, runner.run_study(cfg, progress=False, echo=quiet)


def test_robustness_reruns_probe_ablation_and_patching_per_variant(robust_run):
    cfg, result = robust_run
    assert statuses(result)["robustness"] == "done"
    folder = result.run_dir / "tiny-llama"
    table = pd.read_parquet(folder / "robustness/robustness.parquet")
    assert list(table.columns) == list(ROBUSTNESS_COLUMNS)
    assert table.variant.nunique() == 9
    counts = table.groupby(["variant", "analysis"]).size().unstack()
    assert (counts.readout == 3).all()
    assert (counts.probe == 2 * 3 * 4).all()  # 2 sites x 3 layers x (3 metrics + converged) (position -1)
    assert (counts.ablate == 3 * 3).all() and (counts.patch == 3 * 4).all()  # 3 windows x metrics
    assert set(table[table.analysis != "readout"].site) <= {"attn", "resid"}
    assert set(table[table.analysis.isin(["ablate", "patch"])].site) == {"attn"}
    # The study prompt's variant reproduces the study's own stages: the same functions on the same items.
    t1 = table[table.variant == "T1-2shot"]
    probes = pd.read_parquet(folder / "probe/probes.parquet")
    probes = probes[(probes.task == "emotion") & (probes.position == -1)]
    mine = t1[t1.analysis == "probe"].sort_values(["site", "layer", "metric"])
    theirs = probes.sort_values(["site", "layer", "metric"])
    assert list(zip(mine.site, mine.layer.astype(int), mine.metric, strict=True)) == \
        list(zip(theirs.site, theirs.layer, theirs.metric, strict=True))
    np.testing.assert_allclose(mine.value.to_numpy(), theirs.value.to_numpy())
    for stage, name, analysis in (("ablate", "ablation", "ablate"), ("patch", "patching", "patch")):
        ref = pd.read_parquet(folder / stage / f"{name}.parquet")
        ref = ref[(ref.site == "attn") & (ref["kind"] != "clean")].sort_values(["window_center", "metric"])
        got = t1[t1.analysis == analysis].sort_values(["layer", "metric"])
        assert list(got.layer.astype(int)) == list(ref.window_center)
        np.testing.assert_allclose(got.value.to_numpy(), ref.value.to_numpy(), rtol=1e-5, atol=1e-6)
    readout = json.loads((folder / "readout/metrics.json").read_text())["raw"]
    assert t1[(t1.analysis == "readout") & (t1.metric == "accuracy")].value.iloc[0] == readout["accuracy"]
    assert not list((folder / "robustness/partial").glob("*.store"))  # scratch stores are removed
    html = (result.run_dir / "report.html").read_text()
    for alt in ("robustness probe", "robustness ablate", "robustness patch"):
        assert f'alt="{alt}"' in html
    assert "Readout accuracy ranges from" in html and "The emotion probe peaks" in html


def test_causal_stages_and_cli_write_identical_tables_and_figures(robust_run, tmp_path):
    """One writer: ``emolens ablate`` / ``emolens patch`` with the stages' settings write the very same
    tables and heatmaps (byte for byte) as the study's ablate and patch stages."""
    cfg, result = robust_run
    folder = result.run_dir / "tiny-llama"
    ids = tmp_path / "ids.txt"  # the study's items (--seed would also reseed a --limit sample)
    ids.write_text("\n".join(pd.read_parquet(folder / "readout/readout.parquet")["id"]) + "\n")
    common = ["--model", "tiny:llama", "--data", "stimuli", "--items", str(ids), "--seed", str(cfg.seed + 100),
              "--sites", "attn,resid", "--span", "1", "--positions=-1", "--batch-size", str(cfg.batch_size)]
    for command, stage, table, extra in (("ablate", "ablate", "ablation", ["--kinds", "zero"]),
                                          ("patch", "patch", "patching", ["--pairs", "8"])):
        out = tmp_path / command
        main([command, *common, *extra, "--out", str(out)])
        theirs = folder / stage
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{table}.parquet"),
                                      pd.read_parquet(theirs / f"{table}.parquet"), obj=table)
        figures = sorted(p.name for p in theirs.glob("heatmap_*.png"))
        assert figures and figures == sorted(p.name for p in out.glob("heatmap_*.png"))
        assert all((out / f).read_bytes() == (theirs / f).read_bytes() for f in figures), command
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "patch/pairs.parquet"),
                                  pd.read_parquet(folder / "patch/pairs.parquet"))


def test_robustness_analyses_change_its_key_only_when_on(base_run):
    """A probe setting reaches the robustness stage's key only when it re-runs the probe."""
    cfg, _ = base_run
    base = cfg_with(Path(cfg.output))
    changed = cfg_with(Path(cfg.output), probe={"C": 0.25})
    assert STAGES["robustness"].section(base) == STAGES["robustness"].section(changed)
    on = cfg_with(Path(cfg.output), robustness={"analyses": ["probe"]})
    on_changed = cfg_with(Path(cfg.output), robustness={"analyses": ["probe"]}, probe={"C": 0.25})
    assert STAGES["robustness"].section(on) != STAGES["robustness"].section(on_changed)


def test_causal_sections_take_their_own_positions(tmp_path):
    """``ablate.positions`` / ``patch.positions`` override the study's positions (the paper's per-model
    protocol ablates and patches the last token; -1..-5 is its Llama-1B figure): the tables hold
    exactly those positions, and the other section keeps the study's."""
    cfg = cfg_with(tmp_path, stages=["readout", "ablate", "patch"], positions=[-1, -2],
                   ablate={"positions": [-1], "kinds": ["zero"], "spans": [1], "max_items": 8},
                   patch={"spans": [1], "pairs": 4})
    result = runner.run_study(cfg, progress=False, echo=quiet, report=False)
    assert set(statuses(result).values()) == {"done"}
    ablated = pd.read_parquet(result.run_dir / "tiny-llama/ablate/ablation.parquet")
    patched = pd.read_parquet(result.run_dir / "tiny-llama/patch/patching.parquet")
    assert set(ablated.position) - {""} == {"-1"}
    assert set(patched.position) - {""} == {"-1", "-2"}
    with pytest.raises(EmolensError, match=r"'ablate\.positions'"):
        cfg_with(tmp_path, ablate={"positions": [-1, -1]})
