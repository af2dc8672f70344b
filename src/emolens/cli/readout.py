"""``emolens readout``: which emotion does the model infer for each text?"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from emolens.cli import options as opt
from emolens.cli.corpus_options import Corpus, corpus_options
from emolens.cli.outputs import note_created
from emolens.errors import EmolensError
from emolens.paths import dump_json


def prepare_out_dir(out: Path, force: bool = False, marker: str = "metrics.json") -> Path:
    """Create the output folder, refusing to overwrite a finished result unless ``force``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EmolensError(f"--out {str(out)!r} is a file", "pass a folder path")
    if (out / "manifest.json").exists():
        raise EmolensError(f"--out {str(out)!r} is an activation store; writing results there would overwrite its "
                           "files", "choose a separate --out folder")
    for folder in (out, *out.resolve().parents):
        if (folder / "run.json").exists():
            raise EmolensError(f"--out {str(out)!r} is inside the run folder {str(folder)!r}, which emolens run "
                               "manages", "choose an --out folder outside it")
    if (out / marker).exists() and not force:
        raise EmolensError(f"{str(out)!r} already holds results ({marker})",
                           "choose a new --out folder or pass --force to overwrite")
    if not out.exists():
        missing = [p for p in (out, *out.parents) if not p.exists()]
        out.mkdir(parents=True)
        for folder in missing:  # every folder this call made, so a failure leaves none of them
            note_created(folder)
    return out


def register(app: typer.Typer) -> None:
    @app.command()
    @corpus_options
    def readout(
        model: str = opt.model_option(),
        data: str = opt.data_option(),
        out: Path = opt.out_option(),
        limit: int = opt.limit_option(),
        seed: int = opt.seed_option(),
        template: str = opt.template_option(),
        shots: str = opt.shots_option(),
        separator: str = opt.separator_option(),
        chat: bool = opt.chat_option(),
        calibrate: bool = typer.Option(False, help="also report contextual calibration (Zhao et al., 2021)"),
        correct_from: str = typer.Option("raw", help="which predictions define correct_ids.txt: raw, or calibrated "
                                         "(needs --calibrate; changes the correct subset later analyses use)"),
        batch_size: int = opt.batch_size_option(),
        device: str = opt.device_option(),
        dtype: str = opt.dtype_option(),
        force: bool = opt.force_option(),
        corpus: Corpus = None,
    ) -> None:
        """Score the emotion labels (13, or your --labels) at the answer position; write readout.parquet and metrics."""
        # lazy: these import torch, transformers and pandas, which would slow `emolens --help`
        from emolens.data.corpus import write_ids
        from emolens.model.loading import load_model
        from emolens.readout import readout as run_readout
        from emolens.report.readout_figures import write_readout_figures

        if correct_from not in ("raw", "calibrated") or (correct_from == "calibrated" and not calibrate):
            raise EmolensError(f"--correct-from {correct_from} is not available here",
                               "use raw, or calibrated together with --calibrate")
        spec = opt.prompt_spec(template, shots, separator, chat)
        out_dir = prepare_out_dir(out, force)
        dataset = corpus.load(data, limit, seed)
        spec = corpus.prompt_for(spec, dataset)
        lm = load_model(model, dtype=dtype, device=device)
        batch_size = opt.resolve_batch_size(batch_size, lm)
        start = time.perf_counter()
        result = run_readout(lm, dataset, spec, batch_size=batch_size, calibrate=calibrate)
        seconds = time.perf_counter() - start
        result.frame.to_parquet(out_dir / "readout.parquet", index=False)
        write_ids(out_dir / "correct_ids.txt", result.correct_ids_from(correct_from))
        n_known = int(result.frame["gold"].isin(list(result.labels)).sum())
        write_readout_figures(result.frame, out_dir, f"{model} on {dataset.name} (n={n_known})", result.labels)
        metrics = {**result.metrics, "model": model, "source_id": lm.source_id, "data": data,
                   "dataset_fingerprint": dataset.fingerprint(), "prompt": spec.__dict__,
                   "prompt_fingerprint": spec.fingerprint(), "limit": limit, "seed": seed,
                   "seconds_load": round(lm.load_seconds, 2), "seconds_readout": round(seconds, 2),
                   "items_per_second": round(len(dataset) / seconds, 2), "correct_from": correct_from}
        dump_json(out_dir / "metrics.json", metrics)
        raw = metrics["raw"]
        line = (f"accuracy {raw['accuracy']:.3f} [{raw['accuracy_ci_low']:.3f}, {raw['accuracy_ci_high']:.3f}] "
                f"on {raw['n']} items")
        if calibrate:
            cal = metrics["calibrated"]
            line += f"; calibrated {cal['accuracy']:.3f} [{cal['accuracy_ci_low']:.3f}, {cal['accuracy_ci_high']:.3f}]"
        typer.echo(f"{line}; {seconds:.1f}s; results in {out_dir}")


