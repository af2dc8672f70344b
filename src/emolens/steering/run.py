"""One steering run and its files: what ``emolens steer`` and the study's steer stage both do.

The CLI command and the study stage used to orchestrate steering separately, and their outputs
drifted apart. Both are now thin adapters over :func:`run_steering` (split the items, get the
directions, sweep each direction method with its controls, align the effects with appraisal
theory, steer a few generations) and :func:`write_outputs` (the same file names and tables).
What differs between them is only where settings and directions come from: a :class:`SteerPlan`
and a ``bank_for`` callback.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from emolens.engine.windows import layer_windows
from emolens.errors import EmolensError
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.paths import dump_json
from emolens.probes.evaluation import save_directions
from emolens.steering import selection, theory
from emolens.steering.directions import ConceptBank, capture_resid, format_terms, parse_direction
from emolens.steering.generation import generation_conditions, generation_setting, steered_generations
from emolens.steering.sweep import N_RANDOM, SweepResult, fit_split, sweep

#: Files :func:`write_outputs` writes (figures are drawn from them by :mod:`emolens.report`).
TABLES = ("steering.parquet", "alignment.parquet", "alignment_cells.parquet", "generations.parquet",
          "steering_test.parquet")


@dataclass
class SteerPlan:
    """What to steer and how (see :func:`~emolens.steering.sweep.sweep` for the sweep settings).

    ``fit_given``: the directions were fitted elsewhere (a directions file), so every item is
    steered and the table's ``fit`` is ``given``; otherwise the items are split by ``holdout``.
    ``skip_undefined``: leave out (with a note) directions the fit items cannot define instead of
    refusing them. ``max_items`` caps the steered items (a seeded sample; 0: all).
    """

    directions: list[str]
    methods: list[str] = field(default_factory=lambda: ["diffmean"])
    windows: str | Sequence[int] = "auto"
    span: int = 3
    betas: Sequence[float] = (1.0, 2.0, 4.0)
    positions: Sequence[str] = ("last",)
    scale: str = "unit"
    partial: bool = False
    fixed: Sequence[str] | None = None
    n_random: int = N_RANDOM
    #: per direction, refits on ratings permuted within each emotion (the emotion-only null; 0: none)
    n_emotion_null: int = 0
    #: also steer each direction refitted on ratings residualised on emotion (with ``n_emotion_null``
    #: within-emotion refits of its own): the alignment rows with ``reference = residualised``
    residualised: bool = False
    control: str | None = "auto"
    holdout: float = 0.5
    fit_given: bool = False
    max_items: int = 0
    reference: str = "ratings"
    generations: int = 0
    gen_position: str = "generated"
    gen_window: str | int = "best"
    max_new_tokens: int = 24
    skip_undefined: bool = False
    batch_size: int = 16
    max_rows: int = 64
    fast: bool | None = None
    seed: int = 0
    #: where the nulls run: ``every`` searched setting (max-statistic p over the search) or the
    #: ``selected`` one, chosen on part of the steered items and tested on the rest (``steering.selection``)
    null_design: str = "every"
    #: the selected design's share of the steered items that carry the test
    select_share: float = 0.5
    #: iteration cap of the emotion probes of a ``probe`` bank fitted here (a study: its probe section's)
    max_iter: int = 1000


@dataclass
class SteeringRun:
    """What a steering run produced: the tables, the directions used, and a summary."""

    table: pd.DataFrame
    alignment: pd.DataFrame
    cells: pd.DataFrame
    swept: dict[str, SweepResult]
    generations: pd.DataFrame | None
    summary: dict
    terms: dict[str, list[tuple[str, float]]]
    notes: list[str] = field(default_factory=list)
    model: str = ""
    #: the selected design's test items at the chosen setting(s), every null included (else None)
    test_table: pd.DataFrame | None = None


def _defined(bank: ConceptBank | None, names: Sequence[str], name: str) -> bool:
    return name in names and (bank is None or bank.is_defined(name))


def run_steering(lm, dataset, plan: SteerPlan, spec: PromptSpec | None = None,
                 bank_for: Callable[[str, object, list[int]], ConceptBank | None] | None = None,
                 progress: bool = False, reference_items=None, acts: Callable | None = None) -> SteeringRun:
    """Steer ``dataset`` as ``plan`` says; ``bank_for(method, fit_items, layers)`` may supply directions.
    ``reference_items``: the gold-labelled items the theory reference is computed on (default ``dataset``).

    ``bank_for`` returns a :class:`ConceptBank` or ``None`` (the sweep then captures residuals at
    the answer cue and fits the directions on the fit items itself). ``acts(items, layers)`` may
    supply those residuals from a store extracted with ``spec``'s prompts (see :func:`sweep`); they
    are captured at most once per set of items either way.

    ``plan.null_design``: ``every`` runs the nulls at every searched setting and reports the best
    setting with max-statistic p-values; ``selected`` (:mod:`emolens.steering.selection`) chooses
    the setting on part of the steered items and runs the nulls there on the rest. With a single
    searched setting there is nothing to choose, and both designs run the nulls on every item.
    """
    spec = spec or PromptSpec()
    if plan.reference not in ("ratings", "classifier"):
        raise EmolensError(f"unknown theory reference {plan.reference!r}: use ratings or classifier")
    if plan.null_design not in selection.DESIGNS:
        raise EmolensError(f"unknown null design {plan.null_design!r}", f"use one of {list(selection.DESIGNS)}")
    if not plan.directions:
        raise EmolensError("no steering directions given")
    known = list(dataset.appraisal_names) + list(dataset.label_names)
    parsed = {d: parse_direction(d, list(dict.fromkeys(known + list(spec.labels)))) for d in plan.directions}
    fit, held = (None, dataset) if plan.fit_given else fit_split(dataset, plan.holdout, plan.seed)
    steered = held.sample(plan.max_items, seed=plan.seed) if plan.max_items and len(held) > plan.max_items else held
    windows = layer_windows(lm.n_layers, [plan.span], plan.windows)
    centres = [w.center for w in windows]
    layers = sorted({x for w in windows for x in w.layers})
    n_settings = len(plan.methods) * len(centres) * len(plan.betas) * len(plan.positions)
    selected = plan.null_design == "selected" and n_settings > 1
    notes: list[str] = []
    n_test = round(len(steered) * plan.select_share)
    if selected and (n_test < 2 or len(steered) - n_test < 2):
        selected = False
        notes.append(f"{len(steered)} steered items are too few to choose the setting on some and test it on "
                     "others: the nulls ran at every setting (max-statistic p over the search)")
    acts = _once_per_items(lm, spec, plan.batch_size, acts, notes)
    # the reference comes from every gold-labelled item (``reference_items``, default the dataset), never
    # a model's correct subset, so it does not depend on the model; n per emotion goes into the summary
    ref_items = reference_items if reference_items is not None else dataset
    appraisals = list(ref_items.appraisal_names)
    reference = theory.rating_profile(ref_items, appraisals) if plan.reference == "ratings" \
        else theory.classifier_profile(ref_items, appraisals)
    frames, terms, swept, info, specs_of = [], {}, {}, {}, {}
    for method in plan.methods:
        bank = bank_for(method, fit, layers) if bank_for is not None else None
        if bank is None and fit is None:
            raise EmolensError(f"no {method} directions were given, and the plan says they were fitted elsewhere")
        names = bank.names if bank is not None else known
        specs = [d for d in plan.directions
                 if not plan.skip_undefined or all(_defined(bank, names, t.name) for t in parsed[d])]
        skipped = [d for d in plan.directions if d not in specs]
        if skipped:
            notes.append(_undefined_note(method, skipped))
        if not specs:
            continue
        if bank is not None:  # only defined concepts: the saved directions file holds no NaN/zero vectors
            keep = [i for i, name in enumerate(bank.names) if bank.is_defined(name)]
            bank = ConceptBank(bank.layers, [bank.names[i] for i in keep], bank.vectors[:, keep], bank.method,
                               bank.info)
        # the selected design steers only a few random directions and no refits at every setting
        nulls = dict(n_random=min(plan.n_random, selection.SWEEP_RANDOM), n_emotion_null=0, resid_null=0) \
            if selected else dict(n_random=plan.n_random, n_emotion_null=plan.n_emotion_null)
        res = sweep(lm, steered, specs, bank=bank, method=method, windows=centres, span=plan.span,
                    betas=plan.betas, positions=plan.positions, scale=plan.scale, partial=plan.partial,
                    fixed=plan.fixed, **nulls, residualised=plan.residualised,
                    control=plan.control, spec=spec,
                    fit_dataset=fit, holdout=plan.holdout,
                    batch_size=plan.batch_size, max_rows=plan.max_rows, fast=plan.fast, seed=plan.seed,
                    progress=progress, acts=acts, skip_undefined=plan.skip_undefined, max_iter=plan.max_iter)
        if res.info.get("skipped_directions"):  # the sweep fitted the bank itself and could not define them
            notes.append(_undefined_note(method, res.info["skipped_directions"]))
            specs = [d for d in specs if d not in res.info["skipped_directions"]]
        frames.append(res.frame)
        for d in specs:
            parsed_terms = parse_direction(d, res.bank.names)
            terms[format_terms(parsed_terms)] = [(x.name, x.sign) for x in parsed_terms]
        swept[method], info[method], specs_of[method] = res, res.info, specs
    if not frames:
        raise EmolensError("no steering direction could be built from these items (check the directions, or use "
                           "more items)")
    model = str(getattr(lm, "spec", type(lm).__name__))
    table = pd.concat(frames, ignore_index=True).assign(model=model)
    align, cells = pd.DataFrame(), pd.DataFrame()
    resid_align, resid_cells = pd.DataFrame(), pd.DataFrame()
    test = None
    if reference.notna().any().any():
        if selected:
            test = _selected_test(lm, plan, spec, swept, specs_of, fit, steered, reference, terms, acts, progress)
            align, cells, resid_align, resid_cells = test.alignment(table, reference, terms)
        else:
            align, cells = theory.sweep_alignment(table, reference, terms)
            resid_align, resid_cells = theory.residualised_alignment(table, reference, terms)
        if len(align):
            align = align.assign(model=model, reference=plan.reference)
        if plan.residualised and not len(resid_align):
            notes.append("no direction could be fitted on ratings residualised on emotion: the fit items lack "
                         "ratings a point above and below their emotion's mean (too few items per emotion?)")
    # the first method's sweep facts at the top level (every method shares the split), each method's below
    summary: dict = {**next(iter(info.values())), "rows": len(table), "n_items": len(steered),
                     "n_fit": None if fit is None else len(fit), "n_random": plan.n_random, "methods": info,
                     "directions": list(terms), "reference": plan.reference, "notes": notes,
                     "null_design": "selected" if selected else "every"}
    if test is not None:
        summary.update(test.summary(), min_p_value=1 / (1 + plan.n_random))
    head = align[align.metric == "alignment"].dropna(subset=["value"]) if len(align) else align
    if len(head):
        best = align[align.metric == "best_alignment"].dropna(subset=["value"]).sort_values("value").tail(1)
        summary["best_alignment"] = float(head.value.max())
        if len(best):
            b = best.iloc[0]
            summary.update(best_alignment=float(b.value), best_alignment_p=float(b.p_value),
                           best_window=int(b.window), best_beta=float(b.beta), n_settings=int(b.n_settings))
            beyond = align[align.metric == "best_alignment_beyond_emotion"]
            if len(beyond):
                summary["best_alignment_p_beyond_emotion"] = float(beyond.p_value.iloc[0])
        summary["alignment_headline"] = (theory.headline(align) + theory.residualised_headline(resid_align)
                                         if len(resid_align) else theory.headline(align)).lstrip("; ")
        summary["alignment_peak"] = {m: theory.alignment_peak(r, reference, terms, position=plan.positions[0],
                                                              seed=plan.seed) for m, r in swept.items()}
    b = theory.best_residualised_row(resid_align)
    if b is not None:
        summary.update(residualised_alignment=float(b.value), residualised_p_beyond_emotion=float(b.p_value))
    counts = theory.profile_counts(ref_items)
    summary["reference_n_per_emotion"] = counts
    thin = sorted(e for e, n in counts.items() if 0 < n < theory.MIN_PROFILE_N)
    if thin:
        notes.append(f"theory reference: fewer than {theory.MIN_PROFILE_N} rated items for {', '.join(thin)}")
    generations = None
    if plan.generations:
        # the generations take the method of the best alignment (else the first), at its best setting
        best = align[align.metric == "best_alignment"].dropna(subset=["value"]) if len(align) else align
        method = best.method.iloc[0] if len(best) else head.sort_values("value").method.iloc[-1] if len(head) \
            else next(iter(swept))
        res = swept[method]
        at = generation_setting(align[align.method == method] if len(align) else align, res.conditions,
                                centres, plan.gen_window, plan.positions[0])
        chosen = generation_conditions(res.conditions, *at, plan.positions[0], plan.gen_position)
        records = steered_generations(lm, res.dataset, chosen, n_items=plan.generations, spec=spec,
                                      max_new_tokens=plan.max_new_tokens)
        generations = pd.DataFrame(records)
        generations["probs"] = generations["probs"].map(lambda d: json.dumps(d, sort_keys=True))
        summary.update(generations=len(generations), generation_method=method, generation_window_beta=list(at),
                       generation_position=plan.gen_position,
                       generations_flagged=int(generations.degenerate.sum()))
    if len(resid_align):  # extra rows, after everything read the main ones
        align = pd.concat([align, resid_align.assign(model=model)], ignore_index=True)
        cells = pd.concat([cells.assign(reference=plan.reference),
                           resid_cells.assign(reference=theory.RESIDUALISED_REFERENCE)], ignore_index=True)
    test_table = test.table.assign(model=model) if test is not None and test.table is not None else None
    return SteeringRun(table, align, cells, swept, generations, summary, terms, notes, model, test_table)


def _undefined_note(method: str, directions: Sequence[str]) -> str:
    """The one note for directions left out because the fit items cannot define them, whether the bank
    came from elsewhere or the sweep fitted it."""
    return f"no {method} direction for {list(directions)} (their concepts lack items on both sides in the fit items)"


def _once_per_items(lm, spec: PromptSpec, batch_size: int, acts: Callable | None,
                    notes: list[str] | None = None) -> Callable:
    """``acts(items, layers)`` that asks ``acts`` (a store) first, captures the residuals at the answer
    cue where it has none, and remembers the result per set of items: the selected design's test
    sweeps refit their nulls on the same fit items at fewer layers, and must not run them again.
    A capture where a store was given (it lacks those items or layers) is said in ``notes``: it is
    model work the store was meant to spare."""
    seen: dict[tuple, tuple[list[int], object]] = {}

    def get(items, layers: Sequence[int]):
        key = tuple(items.ids)
        if key in seen and set(layers) <= set(seen[key][0]):
            have, X = seen[key]
            return X[:, [have.index(x) for x in layers]]
        X = acts(items, list(layers)) if acts is not None else None
        if X is None:
            X = capture_resid(lm, build_prompts(items.texts, spec, lm.tokenizer), list(layers), batch_size)
            if acts is not None and notes is not None:
                notes.append(f"residuals at the answer cue captured again for {len(items)} items at layers "
                             f"{list(layers)}: the activation store lacks them")
        seen[key] = (list(layers), X)
        return X

    return get


def _selected_test(lm, plan: SteerPlan, spec: PromptSpec, swept: dict[str, SweepResult], specs_of: dict,
                   fit, steered, reference: pd.DataFrame, terms: dict, acts: Callable, progress: bool
                   ) -> SelectedTest:
    """Choose the setting on the selection items and run the nulls there on the test items
    (:mod:`emolens.steering.selection`); the residualised directions choose their own setting."""
    chosen_on, tested_on = selection.split(steered, plan.select_share, plan.seed)
    frame = pd.concat([selection.effect_frame(r, chosen_on.ids) for r in swept.values()], ignore_index=True)
    raw_at, raw_scores = selection.choose(frame, reference, terms)
    resid_at, resid_scores = selection.choose(frame, reference, terms, residualised=True) if plan.residualised \
        else (None, pd.DataFrame())

    def run(at: dict, **nulls) -> SweepResult:
        res = swept[at["method"]]
        return sweep(lm, tested_on, specs_of[at["method"]], bank=res.bank, method=at["method"],
                     windows=[int(at["window"])], span=plan.span, betas=[float(at["beta"])],
                     positions=[at["position"]], scale=plan.scale, partial=plan.partial, fixed=plan.fixed,
                     spec=spec, fit_dataset=fit, holdout=plan.holdout, batch_size=plan.batch_size,
                     max_rows=plan.max_rows, fast=plan.fast, seed=plan.seed, progress=progress, acts=acts,
                     ref_norm=res.ref_norm or None, **nulls)

    same = resid_at is not None and raw_at is not None and resid_at == raw_at
    raw = run(raw_at, n_random=plan.n_random, n_emotion_null=plan.n_emotion_null, residualised=same,
              control=plan.control) if raw_at is not None else None
    resid = raw if same else run(resid_at, n_random=0, n_emotion_null=0, residualised=True,
                                 resid_null=plan.n_emotion_null, control=None) if resid_at is not None else None
    searched = {(m, c.window, c.beta, c.position) for m, r in swept.items() for c in r.conditions if c.kind == "real"}
    return SelectedTest(raw_at, resid_at, raw, resid, raw_scores, resid_scores, len(chosen_on), len(tested_on),
                        len(searched))


@dataclass
class SelectedTest:
    """The selected design's choice and test: the settings chosen on the selection items, the
    test sweeps at them, and the per-setting scores the choice compared."""

    raw_at: dict | None
    resid_at: dict | None
    raw: SweepResult | None
    resid: SweepResult | None
    raw_scores: pd.DataFrame
    resid_scores: pd.DataFrame
    n_selection: int
    n_test: int
    n_settings: int

    @property
    def table(self) -> pd.DataFrame | None:
        """The test items' steering table: every condition at the chosen setting, and the residualised
        directions with their refits at theirs (only those: the real ones there were not chosen)."""
        parts = [] if self.raw is None else [self.raw.frame]
        if self.resid is not None and self.resid is not self.raw:
            parts.append(self.resid.frame[self.resid.frame.kind.isin(["residualised", "residualised_null"])])
        return pd.concat(parts, ignore_index=True) if parts else None

    def alignment(self, table: pd.DataFrame, reference: pd.DataFrame, terms: dict) -> tuple:
        """``(alignment, cells, residualised alignment, residualised cells)`` with a ``part`` column:
        the sweep over every steered item without p-values (no null ran at every setting), the
        selection items' scores per setting, and the test at the chosen setting with the
        ``best_*`` headline rows."""
        descriptive = table[table.kind != "random"]  # a few random directions, for the figures only
        align, cells = theory.sweep_alignment(descriptive, reference, terms)
        resid_align, resid_cells = theory.residualised_alignment(descriptive, reference, terms)
        parts, resid_parts = [_part(align, "sweep")], [_part(resid_align, "sweep")]
        parts.append(_part(self.raw_scores, "selection"))
        resid_parts.append(_part(self.resid_scores, "selection"))
        if self.raw is not None:
            test, _ = theory.sweep_alignment(self.raw.frame, reference, terms)
            parts += [_part(test, "test"), _part(pd.DataFrame(selection.headline_rows(
                test, self.n_settings, self.n_selection, self.n_test)), "test")]
        if self.resid is not None:
            test, _ = theory.residualised_alignment(self.resid.frame, reference, terms)
            resid_parts += [_part(test, "test"), _part(pd.DataFrame(selection.headline_rows(
                test, self.n_settings, self.n_selection, self.n_test, residualised=True)), "test")]
        return (pd.concat(parts, ignore_index=True), cells,
                pd.concat(resid_parts, ignore_index=True) if len(resid_align) else pd.DataFrame(), resid_cells)

    def summary(self) -> dict:
        def setting(at):
            return None if at is None else {k: (v.item() if hasattr(v, "item") else v) for k, v in at.items()}

        return {"n_selection": self.n_selection, "n_test": self.n_test, "selected_setting": setting(self.raw_at),
                "selected_setting_residualised": setting(self.resid_at),
                "test": {name: r.info for name, r in (("raw", self.raw), ("residualised", self.resid))
                         if r is not None}}


def _part(frame: pd.DataFrame, part: str) -> pd.DataFrame:
    """``frame`` with its ``part`` (:data:`selection.PARTS`) and, in the sweep part, no ``best_*`` rows
    (the max statistic over a sweep without nulls has no p-value; the test's rows replace them)."""
    if not len(frame):
        return frame
    if part == "sweep":
        frame = frame[~frame.metric.astype(str).str.startswith("best_")]
    return frame.assign(part=part)


def write_outputs(run: SteeringRun, out_dir: str | Path, extra: dict | None = None,
                  directions_meta: dict | None = None) -> list[Path]:
    """Write a run's tables (:data:`TABLES`), its directions and ``summary.json`` into ``out_dir``.

    ``extra`` adds keys to ``summary.json``; ``directions_meta`` to the directions file's metadata
    (e.g. where the directions came from).
    """
    out = Path(out_dir)
    written = []
    for name, frame in (("steering.parquet", run.table), ("alignment.parquet", run.alignment),
                        ("alignment_cells.parquet", run.cells), ("generations.parquet", run.generations),
                        ("steering_test.parquet", run.test_table)):
        if frame is None:
            continue
        frame.to_parquet(out / name, index=False)
        written.append(out / name)
    banks = {m: r.bank for m, r in run.swept.items()}
    first = next(iter(banks.values()))
    if all(b.layers == first.layers and b.names == first.names for b in banks.values()):
        save_directions(out / "directions.safetensors", {f"bank/{m}": b.vectors for m, b in banks.items()},
                        {"layers": first.layers, "names": first.names, "model": run.model,
                         "width": int(first.vectors.shape[-1]), **(directions_meta or {})})
        written.append(out / "directions.safetensors")
    dump_json(out / "summary.json", {**run.summary, **(extra or {})})
    return written
