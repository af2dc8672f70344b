"""``emolens extract``: label readout and activations of a corpus, in one pass, into a store."""

from __future__ import annotations

from pathlib import Path

import typer

from emolens.cli import options as opt
from emolens.cli.checks import check_layer_text, relative_positions
from emolens.cli.corpus_options import Corpus, corpus_options
from emolens.errors import EmolensError
from emolens.locks import WriterLock


def register(app: typer.Typer) -> None:
    @app.command()
    @corpus_options
    def extract(
        out: Path = opt.out_option(help="store folder (resumed if incomplete, reused if complete)"),
        model: str = opt.model_option(),
        data: str = opt.data_option(),
        sites: str = typer.Option("attn,mlp,resid", help="comma-separated sites (resid, attn, mlp, attn_post, "
                                                          "mlp_post, heads, embed, final)"),
        layers: str = typer.Option("all", help="'all', '3', '2,5,7' or 'a:b' (0-indexed; b excluded; every "
                                               "layer must exist)"),
        positions: str = typer.Option("-1", help="negative ints relative to the end of the prompt (-1 = the "
                                                 "answer cue token, -2 the one before): '-1,-2', '-5:'; or span "
                                                 "names (context, instruction, shots, answer, all; mean-pooled)"),
        readout: bool = typer.Option(False, help="also store the label scores per item (readout.parquet)"),
        dtype: str = typer.Option("auto", help="storage dtype: auto (the model's own: float32, float16 or "
                                               "bfloat16, kept bit for bit), bfloat16, float16 or float32; "
                                               "bfloat16/float16 round a float32 model's values"),
        limit: int = opt.limit_option(),
        seed: int = opt.seed_option(),
        batch_size: int = opt.batch_size_option(),
        chunk_size: int = opt.chunk_size_option(),
        template: str = opt.template_option(),
        shots: str = opt.shots_option(),
        separator: str = opt.separator_option(),
        chat: bool = opt.chat_option(),
        device: str = opt.device_option(),
        model_dtype: str = opt.dtype_option(),
        corpus: Corpus = None,
    ) -> None:
        """Capture sites x layers x positions for every item (and the label readout) into a store."""
        import time

        from emolens.activations.extract import extract as run_extract
        from emolens.activations.extract import parse_sites
        from emolens.activations.store import storage_dtype
        from emolens.model.loading import load_model

        # cheap checks before the model loads, so a typo costs no time
        if limit < 0:
            raise EmolensError(f"--limit {limit} is negative", "pass --limit 0 (all items) or a positive N")
        check_layer_text(layers)
        parse_sites(sites)
        relative_positions(positions)
        if dtype != "auto":
            storage_dtype(dtype)
        if out.exists() and not out.is_dir():
            raise EmolensError(f"--out {str(out)!r} is a file", "pass a folder path for the store")
        spec = opt.prompt_spec(template, shots, separator, chat)
        created = not out.exists()
        lock = WriterLock(out, "activation store").acquire()  # a second writer stops here, before any work
        try:
            dataset = corpus.load(data, limit, seed)
            spec = corpus.prompt_for(spec, dataset)
            lm = load_model(model, dtype=model_dtype, device=device)
            batch_size = opt.resolve_batch_size(batch_size, lm)
            start = time.perf_counter()
            store = run_extract(lm, dataset, out, sites=sites, layers=layers, positions=positions, spec=spec,
                                readout=readout, dtype=dtype, batch_size=batch_size, chunk_size=chunk_size)
        finally:
            lock.release()
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()  # a command that failed before writing anything leaves no empty folder
        seconds = time.perf_counter() - start
        shapes = ", ".join(f"{s} {tuple(store.read(s).shape)}" for s in store.sites)
        line = f"{len(store)} items; {shapes}"
        if readout:
            frame = store.readout()
            line += f"; accuracy {frame['correct'].mean():.3f}"
        typer.echo(f"{line}; {seconds:.1f}s; store in {out}")
