"""The ``emolens`` command.

Each subcommand lives in its own module of :mod:`emolens.cli` and registers itself through a
``register(app)`` function, so features stay self-contained. The process
tells the truth about how it ended, so scripts can branch on it: 0 success, 1 a failed stage
(a command raises ``typer.Exit(1)``), 2 bad input (every :class:`~emolens.errors.EmolensError`
and usage error becomes one line on stderr), 130 interrupted (Ctrl-C; resumable commands resume
on a rerun).
"""

from __future__ import annotations

import sys

import typer

from emolens.cli import (
    causal,
    compare,
    control,
    crossmodel,
    doctor,
    extract,
    models,
    neurons,
    probe,
    readout,
    run,
    steer,
)
from emolens.cli.options import flag_of
from emolens.cli.outputs import remove_empty_created
from emolens.errors import EmolensError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Mechanistic interpretability of emotion inference in causal language models.")


for _command in (causal, compare, control, crossmodel, doctor, extract, models, neurons, probe, readout, run, steer):
    _command.register(app)


INTERRUPTED = "emolens: interrupted; rerun to resume"


def _exit_code(returned) -> int:
    """What the app returned in non-standalone mode, as a process exit status.

    Typer hands back ``typer.Exit(n)`` as ``n`` and a command's own return value (``None`` for
    success) otherwise; a KeyboardInterrupt inside a command becomes ``Exit(130)``.
    """
    if returned is None or returned is True:
        return 0
    if isinstance(returned, bool):
        return 1
    if isinstance(returned, int):
        return returned
    return 0


def _run(argv: list[str] | None) -> int:
    try:
        code = _exit_code(app(args=argv, standalone_mode=False))
    except EmolensError as exc:
        print(f"emolens: error: {exc.render(flag_of)}", file=sys.stderr)  # library parameters read as flags
        return 2
    except typer.Exit as exc:  # raised outside a command's invoke (e.g. a callback)
        code = int(exc.exit_code or 0)
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:
        # click's Abort and usage errors come from the click that typer vendors; match them by
        # shape rather than by a private class path.
        if type(exc).__name__ == "Abort":
            code = 130
        elif hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            message = exc.format_message() or "no command given: pick one from the list above"
            print(f"emolens: error: {message}", file=sys.stderr)
            return 2
        else:
            raise
    if code == 130:
        print(INTERRUPTED, file=sys.stderr)
    return code


def run_app(argv: list[str] | None = None) -> int:
    """Run the app and return the exit status: 0 success, 1 failed stage, 2 bad input, 130 interrupt.

    A failed command leaves no empty output folder behind (see :mod:`emolens.cli.outputs`).
    """
    code = _run(argv)
    if code:
        remove_empty_created()
    return code


def main(argv: list[str] | None = None) -> None:
    """Console entry point: exit with the status :func:`run_app` returns (return normally on success)."""
    code = run_app(argv)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
