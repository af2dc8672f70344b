"""The quick study's probe stage alone, on a finished run's extract store: seconds, CPU seconds, fits.

Calls :func:`emolens.probes.probing.run_probing` with the arguments the ``probe`` stage passes for
the quick preset (tasks emotion + appraisal, all items, paper split, shuffled control, ``max_iter``
100, directions at ``resid``, seed 0 + 42) and records every :func:`fit_logistic` call it makes:
per-slice iterations, convergence and coefficients. ``--save`` writes them (``.npz``) and
``--compare`` checks them against a saved file, so a faster solver can be checked for the same
answers on the same data. Run the quick study once (``emolens run --preset quick``, or with
``stages: [readout, extract]``) and pass its ``<run>/<model>/extract/store``::

    PYTHONPATH=src python bench/probe_stage.py --store RUN/gemma-3-270m/extract/store --save before.npz
    PYTHONPATH=src python bench/probe_stage.py --store RUN/gemma-3-270m/extract/store --compare before.npz
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import warnings
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd-enVENT"


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True, help="<run>/<model>/extract/store of a quick study")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="crowd-enVENT folder or file (EMOLENS_CROWD_ENVENT)")
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--save", help="write every logistic fit here (.npz)")
    ap.add_argument("--compare", help="compare every logistic fit with this file (.npz from --save)")
    ap.add_argument("--repeat", type=int, default=1, help="time this many runs (the fits recorded are the last's)")
    args = ap.parse_args()
    os.environ.setdefault("EMOLENS_CROWD_ENVENT", args.data)

    import torch

    from emolens.activations.store import ActivationStore
    from emolens.probes import directions, probing
    from emolens.probes import estimators as est

    store = ActivationStore.open(args.store)
    dataset = probing.dataset_for_store(store)
    fits: list[dict] = []

    def record(fit):
        fits.append({"n_iter": fit.n_iter.numpy(), "converged": fit.converged.numpy(),
                     "grad_norm": fit.grad_norm.double().numpy(), "loss": fit.loss.double().numpy(),
                     "coef": fit.coef.double().numpy(), "intercept": fit.intercept.double().numpy()})
        return fit

    # every logistic fit the stage makes, in order (one record per label set)
    one, many = est.fit_logistic, getattr(est, "fit_logistic_labels", None)
    est.fit_logistic = directions.fit_logistic = lambda *a, **kw: record(one(*a, **kw))
    if many is not None:
        est.fit_logistic_labels = lambda *a, **kw: [record(f) for f in many(*a, **kw)]
    times = []
    for _ in range(args.repeat):
        fits.clear()
        t0, c0 = time.perf_counter(), cpu_seconds()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = probing.run_probing(store, dataset, tasks=["emotion", "appraisal"], items="all", protocol="paper",
                                      probe="logistic", appraisals="paper", directions=True, human_baseline=True,
                                      direction_sites=["resid"], shuffled=True, k=5, seed=42, C=1.0, alpha=5.0,
                                      n_boot=200, max_iter=args.max_iter, standardize=False, device=None)
        times.append((time.perf_counter() - t0, cpu_seconds() - c0))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    it = np.concatenate([f["n_iter"] for f in fits])
    conv = np.concatenate([f["converged"] for f in fits])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {load}")
    for wall, cpu in times:
        print(f"probe stage: {wall:.2f} s wall, {cpu:.2f} s CPU")
    print(f"seconds by part: {res.summary['seconds']}")
    print(f"{len(fits)} logistic calls, {len(it)} slice fits: iterations total {it.sum()}, "
          f"at the cap {(it >= args.max_iter).sum()}, converged {conv.sum()}")
    table = res.table.sort_values(["task", "target", "site", "layer", "position", "metric"])
    values = table[["value", "ci_low", "ci_high"]].to_numpy(np.float64)
    if args.save:
        np.savez(args.save, table=values, **{f"{i}_{k}": v for i, f in enumerate(fits) for k, v in f.items()})
    if args.compare:
        ref = np.load(args.compare)
        worst = {"coef": 0.0, "loss": 0.0, "pred": 0}
        same_iter = 0
        for i, f in enumerate(fits):
            scale = np.abs(ref[f"{i}_coef"]).max(axis=(1, 2), keepdims=True)
            worst["coef"] = max(worst["coef"], float((np.abs(f["coef"] - ref[f"{i}_coef"]) / scale).max()))
            worst["loss"] = max(worst["loss"], float(np.abs(f["loss"] / ref[f"{i}_loss"] - 1).max()))
            same_iter += int((f["n_iter"] == ref[f"{i}_n_iter"]).sum())
            assert (f["converged"] == ref[f"{i}_converged"]).all(), f"fit {i}: convergence differs"
        acc = table.metric.to_numpy() == "accuracy"
        diff = np.abs(values - ref["table"])
        print(f"vs {args.compare}: max |coef diff| / max|coef| {worst['coef']:.2e}, max rel loss diff "
              f"{worst['loss']:.2e}, same iteration count in {same_iter}/{len(it)} slice fits; table: "
              f"{int((diff > 0).any(1).sum())}/{len(values)} rows differ, max |diff| {np.nanmax(diff):.2e} "
              f"(accuracy rows {np.nanmax(diff[acc]) if acc.any() else 0:.2e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
