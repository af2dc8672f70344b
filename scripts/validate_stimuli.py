"""Validate the built-in appraisal minimal pairs against a model's readout and appraisal probes.

For every pair type it reports

1. **readout**: how often the model's emotion readout moves in the predicted direction between
   the two members. With ``e_a``/``e_b`` the emotions the design predicts for members a and b,
   ``delta = [logp(e_b) - logp(e_a)] at b - [logp(e_b) - logp(e_a)] at a``; a pair counts when
   ``delta > 0``. Also the raw argmax flip rate (the argmax label differs between the members)
   and the rate at which the argmax hits the predicted label at both members.
2. **probes**: ridge probes for the 21 crowd-enVENT appraisals, trained on the activation store
   (site ``resid``, position -1) of the crowd-enVENT items (standardised inputs, alpha per target by
   leave-one-out error); the layer is the mid/late layer with
   the best held-out R^2 (80/20 split) on the columns the pairs manipulate. A (pair, column)
   counts when the probe scores the member with the higher design value higher.

Proportions carry 95% Wilson intervals. The pair items are run once through
:func:`emolens.activations.extract.extract` (readout and ``resid`` at -1, all layers, float32) with the
store's own prompt spec, so the probes see the same prompt format they were trained on.

    PYTHONPATH=src HF_HUB_OFFLINE=1 .venv/bin/python scripts/validate_stimuli.py \\
        --model gemma-3-270m --acts /tmp/acts-gemma \\
        --data ../shared/data/crowd-enVENT/enVent_gen_Data.csv --out runs/stimuli-validation

Exits 0 with a message when the crowd-enVENT file or the store is absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

SITE, POSITION = "resid", -1
#: standardised inputs, per-target alpha by exact leave-one-out error on the training items. A fixed
#: alpha 5 on raw gemma-3-270m activations overfits (held-out R^2 < 0 at most layers): the residual
#: stream reaches |x| ~ 1e4 in late layers, so alpha 5 is next to no penalty.
RIDGE = {"alpha": "gcv", "standardize": True, "dtype": torch.float64}
#: the column of each type shown in the summary table (the rest are in the detail table)
PRIMARY = {
    "responsibility_self_other": "other_responsblt",
    "responsibility_self_chance": "chance_responsblt",
    "responsibility_other_chance": "chance_responsblt",
    "pleasantness": "pleasantness",
    "suddenness": "suddenness",
    "control": "self_control",
    "norm_violation": "standards",
}


def _fmt(k: int, n: int) -> str:
    from emolens.metrics import wilson_interval

    lo, hi = wilson_interval(k, n)
    return f"{k / n:.2f} [{lo:.2f}, {hi:.2f}]" if n else "–"


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _prompt_spec(store):
    from emolens.inputs.prompts import PromptSpec

    raw = store.manifest["identity"]["prompt"]
    return PromptSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def readout_rows(frame: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per pair: delta, argmax at each member, hits."""
    by_id = frame.set_index("id")
    rows = []
    for p in pairs.itertuples(index=False):
        a, b = by_id.loc[p.source_id], by_id.loc[p.target_id]
        ea, eb = p.source_emotion, p.target_emotion
        gap_b = b[f"logp_{eb}"] - b[f"logp_{ea}"]
        gap_a = a[f"logp_{eb}"] - a[f"logp_{ea}"]
        rows.append({"pair_id": p.pair_id, "type": p.type, "frame": p.frame, "emotion_a": ea,
                     "emotion_b": eb, "delta": float(gap_b - gap_a), "argmax_a": a["pred"],
                     "argmax_b": b["pred"]})
    out = pd.DataFrame(rows)
    out["moves"] = out["delta"] > 0
    out["flip"] = out["argmax_a"] != out["argmax_b"]
    out["hit_both"] = (out["argmax_a"] == out["emotion_a"]) & (out["argmax_b"] == out["emotion_b"])
    return out


def probe_layers(X: np.ndarray, Y: np.ndarray, layers: list[int], cols: list[int], seed: int = 0):
    """Held-out R^2 per layer and target (80/20 split) of the ridge probes (:data:`RIDGE`)."""
    from emolens.probes.estimators import fit_ridge

    n = X.shape[1]
    perm = np.random.default_rng(seed).permutation(n)
    test, train = perm[: n // 5], perm[n // 5:]
    fit = fit_ridge(X[:, train], Y[train], **RIDGE)
    Xt = torch.as_tensor(X[:, test], dtype=torch.float64)
    pred = torch.einsum("snd,std->snt", Xt, fit.coef) + fit.intercept[:, None, :]
    Yt = torch.as_tensor(Y[test], dtype=torch.float64)
    sse = ((pred - Yt) ** 2).sum(1)
    sst = ((Yt - Yt.mean(0)) ** 2).sum(0)
    r2 = (1 - sse / sst).numpy()  # [S, T]
    return pd.DataFrame(r2, index=pd.Index(layers, name="layer")), r2[:, cols].mean(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--acts", default="/tmp/acts-gemma", help="crowd-enVENT activation store of --model")
    ap.add_argument("--data", default="../shared/data/crowd-enVENT/enVent_gen_Data.csv",
                    help="crowd-enVENT generation CSV (appraisal ratings for the probes)")
    ap.add_argument("--out", default="runs/stimuli-validation", help="folder for CSVs, the table and the pair store")
    ap.add_argument("--layer", type=int, default=None, help="probe layer (default: best held-out R^2, mid/late)")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)

    if not Path(args.data).is_file():
        print(f"skip: crowd-enVENT file {args.data} not found")
        return 0
    if not (Path(args.acts) / "manifest.json").is_file():
        print(f"skip: activation store {args.acts} not found")
        return 0

    from emolens.activations.extract import extract
    from emolens.activations.store import ActivationStore
    from emolens.data.corpus import load_crowd_envent
    from emolens.data.stimuli import load_stimuli, load_stimulus_pairs
    from emolens.labels import ALL_APPRAISALS
    from emolens.model.loading import load_model
    from emolens.probes.estimators import fit_ridge

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = ActivationStore.open(args.acts)
    if store.manifest["identity"]["model"] != args.model:
        print(f"warning: store {args.acts} was extracted with {store.manifest['identity']['model']!r}, "
              f"not {args.model!r}", file=sys.stderr)
    if SITE not in store.sites or POSITION not in store.positions:
        print(f"skip: store {args.acts} has no {SITE} at position {POSITION}")
        return 0
    spec = _prompt_spec(store)
    layers = store.layers_of(SITE)

    # --- one forward over the pair items: readout + resid at -1, every layer of the store
    pairs = load_stimulus_pairs()
    items = load_stimuli("pairs", appraisals="all")
    lm = load_model(args.model)
    pstore = extract(lm, items, out / "pair-store", sites=[SITE], layers=layers, positions=[POSITION],
                     spec=spec, readout=True, dtype="float32", batch_size=args.batch_size)
    del lm
    frame = pstore.readout()
    frame.to_csv(out / "readout.csv", index=False)
    per_pair = readout_rows(frame, pairs)

    # --- probes on crowd-enVENT
    ds = load_crowd_envent(args.data).subset(store.item_ids)
    names = [n for n in ALL_APPRAISALS if n in ds.appraisal_names]
    Y = np.stack([ds.appraisal(n) for n in names], 1).astype(np.float64)
    ok = np.isfinite(Y).all(1)
    p = store.positions.index(POSITION)
    X = np.ascontiguousarray(np.asarray(store.read(SITE)[ok, :, p, :]).transpose(1, 0, 2))  # [S, n, d]
    Y = Y[ok]
    moved = sorted({c for m in pairs["manipulated"] for c in m.split("+")}, key=names.index)
    r2, r2_moved = probe_layers(X, Y, layers, [names.index(c) for c in moved])
    r2.columns = names
    r2.assign(mean_moved=r2_moved).to_csv(out / "probe_r2.csv")
    mid = [i for i, layer in enumerate(layers) if layer >= len(layers) // 3]
    best = mid[int(np.argmax(r2_moved[mid]))]
    chosen = layers.index(args.layer) if args.layer is not None else best
    fit = fit_ridge(X, Y, **RIDGE)  # all layers, all crowd-enVENT items

    P = torch.as_tensor(np.array(pstore.read(SITE)[:, :, 0, :]).transpose(1, 0, 2), dtype=torch.float64)
    scores = (torch.einsum("snd,std->snt", P, fit.coef) + fit.intercept[:, None, :]).numpy()  # [S, items, T]
    row = {item: i for i, item in enumerate(pstore.item_ids)}
    design = {item: items.appraisals[i] for i, item in enumerate(items.ids)}
    rank_rows = []
    for pr in pairs.itertuples(index=False):
        ia, ib = row[pr.source_id], row[pr.target_id]
        for col in pr.manipulated.split("+"):
            j, k = names.index(col), items.appraisal_names.index(col)
            b_higher = design[pr.target_id][k] > design[pr.source_id][k]
            diff = scores[:, ib, j] - scores[:, ia, j]  # per layer
            correct = diff > 0 if b_higher else diff < 0
            rank_rows.append({"pair_id": pr.pair_id, "type": pr.type, "column": col,
                              "higher": "b" if b_higher else "a",
                              **{f"L{layer}": bool(c) for layer, c in zip(layers, correct, strict=True)}})
    ranks = pd.DataFrame(rank_rows)
    per_pair.to_csv(out / "readout_pairs.csv", index=False)
    ranks.to_csv(out / "probe_pairs.csv", index=False)

    # --- tables
    L = f"L{layers[chosen]}"
    types = list(dict.fromkeys(pairs["type"]))
    summary = []
    for t in types:
        rd = per_pair[per_pair["type"] == t]
        pr = ranks[(ranks["type"] == t) & (ranks["column"] == PRIMARY.get(t, ""))]
        if pr.empty:
            pr = ranks[ranks["type"] == t].drop_duplicates("pair_id")
        n = len(rd)
        summary.append([f"`{t}`", n, f"{rd['delta'].median():+.2f}", _fmt(int(rd["moves"].sum()), n),
                        _fmt(int(rd["flip"].sum()), n), _fmt(int(rd["hit_both"].sum()), n),
                        f"`{pr['column'].iloc[0]}`", _fmt(int(pr[L].sum()), len(pr))])
    n_all = len(per_pair)
    summary.append(["all", n_all, f"{per_pair['delta'].median():+.2f}", _fmt(int(per_pair["moves"].sum()), n_all),
                    _fmt(int(per_pair["flip"].sum()), n_all), _fmt(int(per_pair["hit_both"].sum()), n_all),
                    "all moved columns", _fmt(int(ranks[L].sum()), len(ranks))])
    head = ["type", "pairs", "median Δ", "Δ > 0", "argmax flips", "argmax = prediction at both",
            "probe column", f"probe ranks pair (layer {layers[chosen]})"]
    detail = []
    for t in types:
        for col in dict.fromkeys(ranks.loc[ranks["type"] == t, "column"]):
            sub = ranks[(ranks["type"] == t) & (ranks["column"] == col)]
            detail.append([f"`{t}`", f"`{col}`", sub["higher"].iloc[0], f"{r2.loc[layers[chosen], col]:.2f}",
                           _fmt(int(sub[L].sum()), len(sub))])
    dhead = ["type", "column", "higher member", f"held-out R² (layer {layers[chosen]})", "probe ranks pair"]
    by_layer = ", ".join(f"{layer}: {r2_moved[i]:.2f}/{ranks[f'L{layer}'].mean():.2f}"
                         for i, layer in enumerate(layers))
    md = "\n\n".join([
        _table(head, summary),
        _table(dhead, detail),
        f"Per layer (mean held-out R² on the moved columns / fraction of probe comparisons ranked right): "
        f"{by_layer}.",
    ]) + "\n"
    (out / "validation.md").write_text(md)
    print(md)
    print(f"wrote {out}/validation.md, readout_pairs.csv, probe_pairs.csv, probe_r2.csv, readout.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
