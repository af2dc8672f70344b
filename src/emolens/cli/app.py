"""The ``emolens`` command.

Each subcommand lives in its own module of :mod:`emolens.cli` and registers itself through a
``register(app)`` function, so features stay self-contained. Every
:class:`~emolens.errors.EmolensError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

import typer

from emolens.cli import causal, compare, control, extract, models, probe, readout, run, steer
from emolens.errors import EmolensError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Mechanistic interpretability of emotion inference in causal language models.")


for _command in (causal, compare, control, extract, models, probe, readout, run, steer):
    _command.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, mapping user errors to one line and exit status 2."""
    try:
        app(args=argv, standalone_mode=False)
    except EmolensError as exc:
        print(f"emolens: error: {exc}", file=sys.stderr)
        sys.exit(EmolensError.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("emolens: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        # Usage errors (bad option, missing argument) come from the click typer vendors; match
        # them by shape rather than by a private class path.
        if type(exc).__name__ == "Abort":
            print("emolens: interrupted; rerun the same command to resume", file=sys.stderr)
            sys.exit(130)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            print(f"emolens: error: {exc.format_message()}", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
