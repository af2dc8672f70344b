"""``emolens control``: steer replies to emotionally sensitive messages and judge them independently."""

from __future__ import annotations

from pathlib import Path

import typer

from emolens.cli import options as opt
from emolens.cli.corpus_options import Corpus, corpus_options
from emolens.errors import EmolensError
from emolens.labels import EMOTIONS


def _floats(text: str, option: str = "--betas", allow_none: bool = False) -> tuple[float, ...]:
    if allow_none and text.strip().lower() in ("", "none"):
        return ()
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise EmolensError(f"bad {option} {text!r}", "write numbers separated by commas, e.g. 0.02,0.05") from exc
    if not values:
        raise EmolensError(f"no {option} given", "write numbers separated by commas, e.g. 0.02,0.05")
    if any(b <= 0 for b in values):
        raise EmolensError(f"{option} {text!r} has a value <= 0", "give positive strengths; beta 0 (clean) "
                           "always runs")
    return values


def retention_items(spec: str, fit, n: int, seed: int):
    """Labelled items for the readout-retention check, never ones the directions were fitted on.

    ``auto``: crowd-enVENT when it is available, else the built-in stimuli singles.
    """
    # lazy: the library imports torch, transformers or pandas; kept out of `emolens --help`
    from emolens.data.loading import load_dataset

    if spec == "auto":
        try:
            data = load_dataset("crowd-envent")
        except EmolensError:
            data = load_dataset("stimuli", kind="singles")
    else:
        data = load_dataset(spec)
    keep = [i for i, item in enumerate(data.ids) if item not in set(fit.ids)]
    if not keep:
        raise EmolensError(f"every retention item of {spec!r} was used to fit the directions",
                           "pass --retention-data with other labelled items")
    data = data.subset(keep)
    labelled = [i for i, lab in enumerate(data.labels) if lab is not None]
    data = data.subset(labelled)
    return data.sample(n, seed=seed) if n and n < len(data) else data


def register(app: typer.Typer) -> None:
    @app.command()
    @corpus_options
    def control(
        model: str = opt.model_option(),
        data: str = opt.data_option("sensitive", help="messages to reply to: sensitive (built in) or a table "
                                                      "with a text column"),
        out: Path = opt.out_option(help="output folder (resumes a run with the same settings)"),
        direction: list[str] = typer.Option(["other_responsblt-", "pleasantness+", "self_control+", "anger-"],
                                            help="steering directions (repeat the option), e.g. other_responsblt-"),
        betas: str = typer.Option("0.02,0.05", help="positive strengths replied at; the clean run is beta 0"),
        capability_betas: str = typer.Option("0.1,0.2", help="extra strengths at which only capability is "
                                             "measured (no replies), so the curve reaches the break; none: skip"),
        scale: str = typer.Option("relative", help="relative (beta x mean residual norm) or unit"),
        window: int = typer.Option(-1, help="centre layer of the steered window (-1: the middle layer)"),
        span: int = typer.Option(3, help="layers in the window"),
        form: str = typer.Option("auto", help="auto (chat when the tokenizer has a template), raw or chat"),
        instruction: str = typer.Option("Please reply calmly and kindly.", help="the instructed baseline's "
                                        "request"),
        max_new_tokens: int = typer.Option(40, help="tokens per reply"),
        limit: int = opt.limit_option(help="a seeded, emotion-stratified sample of N messages (0 = all)"),
        fit_data: str = typer.Option("stimuli", help="labelled data the directions are fitted on"),
        fit_items: int = typer.Option(260, help="items of --fit-data used (seeded stratified sample; 0 = all)"),
        retention_data: str = typer.Option("auto", help="labelled items for readout retention (auto: "
                                           "crowd-enVENT if present, else the stimuli singles)"),
        retention_items_n: int = typer.Option(65, "--retention-items", help="retention items (0 = all)"),
        judges: str = typer.Option("nrc,vader,safety,readout", help="judges, comma-separated"),
        batch_size: int = opt.batch_size_option(8, help="replies generated per batch"),
        n_boot: int = typer.Option(1000, help="bootstrap resamples of the item-clustered intervals"),
        seed: int = opt.seed_option(help="seed of the samples and the bootstrap"),
        device: str = opt.device_option(),
        dtype: str = opt.dtype_option(),
        overwrite: bool = typer.Option(False, help="replace a run with other settings in --out"),
        corpus: Corpus = None,
    ) -> None:
        """Replies with and without appraisal/emotion steering and an instructed baseline, judged independently,
        with capability retention and safety rates versus beta."""
        import time

        from emolens.control.judges import JUDGES
        from emolens.control.prompts import FORMS
        from emolens.control.study import ControlConfig, run_control
        from emolens.data.loading import load_dataset
        from emolens.data.sensitive import load_neutral_text
        from emolens.model.loading import load_model
        from emolens.report.control_section import write_control_report
        from emolens.steering.apply import SCALES
        from emolens.steering.directions import parse_direction

        if scale not in SCALES:
            raise EmolensError(f"unknown scale {scale!r}", f"use one of {list(SCALES)}")
        if form not in FORMS:
            raise EmolensError(f"unknown --form {form!r}", f"use one of {list(FORMS)}")
        beta_values = _floats(betas)
        probe_values = _floats(capability_betas, "--capability-betas", allow_none=True)
        judge_names = tuple(j.strip() for j in judges.split(",") if j.strip())
        unknown = [j for j in judge_names if j not in JUDGES]
        if unknown or "vader" not in judge_names or "safety" not in judge_names:
            raise EmolensError(f"bad --judges {judges!r}", f"use some of {sorted(JUDGES)}, including vader and "
                               "safety (the worse-than-clean rate needs them)")
        dirs = tuple(d for spec in direction for d in spec.split(";") if d.strip())
        dataset = corpus.load(data)
        for d in dirs:
            parse_direction(d, list(dataset.appraisal_names) + list(EMOTIONS))
        if limit:
            dataset = dataset.sample(limit, seed=seed)
        fit = load_dataset(fit_data)
        if fit_items:
            fit = fit.sample(fit_items, seed=seed)
        retention = retention_items(retention_data, fit, retention_items_n, seed)
        lm = load_model(model, dtype=dtype, device=device)
        batch_size = opt.resolve_batch_size(batch_size, lm)
        cfg = ControlConfig(directions=dirs, betas=beta_values, capability_betas=probe_values, scale=scale,
                            window=None if window < 0 else window,
                            span=span, form=form, instruction=instruction, max_new_tokens=max_new_tokens,
                            batch_size=batch_size, judges=judge_names, n_boot=n_boot, seed=seed)
        start = time.perf_counter()
        result = run_control(lm, dataset, out, fit, retention, load_neutral_text(), cfg, overwrite,
                             progress=lambda msg: typer.echo(msg, err=True))
        seconds = time.perf_counter() - start
        report = write_control_report(out)
        typer.echo(f"{len(result.replies)} replies ({result.info['n_messages']} messages, "
                   f"{result.replies['condition'].nunique()} conditions, {result.info['form']} form) in "
                   f"{seconds:.0f}s; results in {out}, report {report.name}")
        typer.echo(result.info["verdict"]["text"])
