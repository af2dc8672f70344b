"""``emolens steer``: push the residual stream along appraisal directions and measure what changes."""

from __future__ import annotations

from pathlib import Path

import typer

from emolens.cli import options as opt
from emolens.cli.corpus_options import Corpus, corpus_options


def register(app: typer.Typer) -> None:
    @app.command()
    @corpus_options
    def steer(
        model: str = opt.model_option(),
        data: str = opt.data_option(),
        out: Path = opt.out_option(),
        direction: list[str] = typer.Option(["pleasantness+"], help="signed terms, e.g. pleasantness+,"
                                            "other_responsblt- (repeat the option for several directions)"),
        acts: str = typer.Option("", help="activation store folder (directions fitted on the fit split of its "
                                 "items) or directions.safetensors (every item steered) to take directions "
                                 "from (default: capture them here)"),
        method: str = typer.Option("diffmean", help="diffmean, probe (the paper) or pca"),
        partial: bool = typer.Option(False, help="project the kept-fixed appraisals out of each term"),
        fixed: str = typer.Option("", help="appraisals held fixed with --partial (default: the paper's four "
                                  "surgery appraisals not steered)"),
        windows: str = typer.Option("auto", help="window centre layers (0-indexed), e.g. 3,5,8, or auto"),
        span: int = typer.Option(3, help="layers per window"),
        beta: str = typer.Option("1,2,4", help="strengths"),
        scale: str = typer.Option("unit", help="unit (β in raw units, the paper) or relative (β × mean "
                                  "residual norm at the layer)"),
        positions: str = typer.Option("last", help="sweep positions: last and/or prompt (comma-separated); "
                                      "last runs on the shared-prefix fast path"),
        n_random: int = typer.Option(99, help="norm-matched random directions per condition, drawn with the fit "
                                     "activations' covariance (99: p-values down to 0.01)"),
        n_emotion_null: int = typer.Option(39, help="per direction, refits on ratings permuted within each emotion: "
                                           "the null of appraisal information beyond emotion"),
        residualised: bool = typer.Option(True, help="also steer directions refitted on ratings residualised on "
                                          "emotion, tested against within-emotion refits of the residuals"),
        null_design: str = typer.Option("every", help="where the nulls run: every searched setting (max-statistic "
                                        "p over the search) or selected: the setting chosen on half of the "
                                        "steered items, tested with every null on the other half"),
        holdout: float = typer.Option(0.5, help="share of items held out: directions are fitted on the rest "
                                      "and effects measured on these (seeded, label-stratified); 0 = fit and "
                                      "steer on all items, as the paper did"),
        control: str = typer.Option("auto", help="specificity-control appraisal, auto, or none"),
        reference: str = typer.Option("ratings", help="theory reference: ratings (z-scored mean rating per "
                                      "emotion) or classifier (human-baseline coefficients)"),
        limit: int = opt.limit_option(),
        generate: int = typer.Option(0, help="write steered continuations of this many (steered) items"),
        gen_position: str = typer.Option("generated", help="where generation steers: generated (the last "
                                         "prompt token and every generated token), last or prompt"),
        gen_window: str = typer.Option("best", help="window of the generations: best (the window and beta of "
                                       "the highest theory alignment), middle (largest beta), or a centre layer"),
        max_new_tokens: int = typer.Option(24, help="tokens per continuation"),
        seed: int = opt.seed_option(help="seed of the sample, random directions and bootstrap"),
        batch_size: int = opt.batch_size_option(help="items per forward"),
        max_rows: int = typer.Option(64, help="rows per full forward when conditions are stacked"),
        fast: bool = typer.Option(True, help="last-token steering on a shared KV prefix (--no-fast: full "
                                  "forwards, same numbers, for checking)"),
        device: str = opt.device_option(),
        dtype: str = opt.dtype_option(),
        force: bool = opt.force_option(),
        corpus: Corpus = None,
    ) -> None:
        """Steering sweep with random and specificity controls, theory alignment and steered generation."""
        args = dict(locals())
        from emolens.cli import steer_run  # lazy: it loads torch and the model code, which `--help` must not

        steer_run.steer(**args)
