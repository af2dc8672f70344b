"""The options every command shares, declared once, and how library parameters read as flags.

Commands differ in a few defaults (batch 16 for forwards, 8 for generation; seed 0, 42 or 100),
so each option is a small factory taking what differs; the wording and the meaning stay in one
place. :data:`PARAM_FLAGS` is the one table from a library parameter name (what
:func:`emolens.errors.arg` marks in an error) to the flag a CLI user types; the error handler in
:mod:`emolens.cli.app` renders messages through :func:`flag_of`.
"""

from __future__ import annotations

from typing import Any

import typer

from emolens.errors import EmolensError

__all__ = ["PARAM_FLAGS", "batch_size_option", "chat_option", "chunk_size_option", "data_option", "device_option",
           "dtype_option", "flag_of", "force_option", "limit_option", "model_option", "out_option",
           "parse_batch_size", "prompt_spec", "resolve_batch_size", "seed_option", "separator_option", "shots_option",
           "template_option"]

#: Library parameter (as :func:`emolens.errors.arg` names it) -> the flag a CLI user types.
#: ``columns.*`` are the fields of :class:`emolens.data.loading.Columns`, set by the corpus options.
PARAM_FLAGS: dict[str, str] = {
    "appraisals": "--appraisals",
    "batch_size": "--batch-size",
    "betas": "--betas",
    "calibrate": "--calibrate",
    "chunk_size": "--chunk-size",
    "columns.appraisals": "--appraisal-columns",
    "columns.id": "--id-column",
    "columns.label": "--label-column",
    "columns.label_map": "--label-map",
    "columns.labels": "--labels",
    "columns.text": "--text-column",
    "data": "--data",
    "dtype": "--dtype",
    "fixed": "--fixed",
    "form": "--form",
    "holdout": "--holdout",
    "ids": "--ids",
    "items": "--items",
    "layers": "--layers",
    "limit": "--limit",
    "out": "--out",
    "overwrite": "--overwrite",
    "pairs": "--pairs",
    "positions": "--positions",
    "protocol": "--protocol",
    "readout": "--readout",
    "save_resid": "--save-resid",
    "tasks": "--task",
}


def flag_of(param: str) -> str | None:
    """The CLI flag of a library parameter, or None where the CLI has none."""
    return PARAM_FLAGS.get(param)


def model_option() -> Any:
    return typer.Option("gemma-3-270m", help="alias, hub id, local folder or .gguf file")


def data_option(default: str | None = "crowd-envent",
                help: str = "crowd-envent, stimuli, or a CSV/TSV/JSONL/zip path") -> Any:
    return typer.Option(default, help=help)


def out_option(help: str = "output folder") -> Any:
    return typer.Option(..., help=help)


def limit_option(help: str = "seeded label-stratified sample of N items (0 = all)") -> Any:
    return typer.Option(0, help=help)


def seed_option(default: int = 0, help: str = "seed of the --limit sample") -> Any:
    return typer.Option(default, help=help)


def _positive_or_auto(value: str | int, flag: str, example: int) -> int | str:
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise typer.BadParameter(f"{value!r} is not a positive whole number or 'auto'; pass e.g. {flag} {example} "
                                 f"or {flag} auto", param_hint=f"'{flag}'")
    return int(text)


def parse_batch_size(value: str | int) -> int | str:
    """``--batch-size``: a positive whole number, or ``auto`` (chosen once the model is loaded, see
    :func:`resolve_batch_size`). A bad value is a usage error: exit 2, one line."""
    return _positive_or_auto(value, "--batch-size", 16)


def chunk_size_option(default: int = 256) -> Any:
    """``--chunk-size N`` or ``--chunk-size auto`` (as many items as a GiB of host buffers holds, at
    least 256: :func:`~emolens.activations.extract.auto_chunk_size`); a bad value: exit 2, one line."""
    return typer.Option(default, parser=lambda v: _positive_or_auto(v, "--chunk-size", 256), metavar="N|auto",
                        help="items per durable chunk (host memory scales with it); 'auto': a GiB of buffers")


def batch_size_option(default: int = 16, help: str = "prompts per forward pass") -> Any:
    """``--batch-size N`` or ``--batch-size auto`` (from the model's shapes and the free memory);
    every command that takes it passes the parsed value through :func:`resolve_batch_size`."""
    return typer.Option(default, parser=parse_batch_size, metavar="N|auto",
                        help=f"{help}; 'auto': chosen from free memory (16 on a CPU)")


def resolve_batch_size(value: int | str, lm) -> int:
    """The batch size a command runs with: ``value``, or for ``auto`` the
    :func:`~emolens.engine.memory.auto_batch_size` of the loaded model on its device."""
    if value != "auto":
        return int(value)
    from emolens.engine.memory import auto_batch_size  # lazy: it imports torch, which `--help` must not

    return auto_batch_size(lm.model.config, lm.device, lm.dtype)


def device_option(help: str = "auto, cpu, cuda, cuda:1 ...") -> Any:
    return typer.Option("auto", help=help)


def dtype_option() -> Any:
    """The model weights' dtype (``extract`` names it ``--model-dtype``; its ``--dtype`` is the store's)."""
    return typer.Option("auto", help="model weights: auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, "
                                     "float16")


def force_option() -> Any:
    return typer.Option(False, help="overwrite an existing result in --out")


def template_option() -> Any:
    return typer.Option("T1", help="T1..T8 or a custom string containing {text}")


def shots_option() -> Any:
    return typer.Option("joy,sadness", help="shot emotions, comma-separated ('none' for zero-shot)")


def separator_option() -> Any:
    return typer.Option("space", help="'space' (paper) or 'newline' between prompt parts")


def chat_option() -> Any:
    return typer.Option(False, help="wrap the prompt in the tokenizer's chat template")


def prompt_spec(template: str, shots: str, separator: str, chat: bool):
    """The :class:`~emolens.inputs.prompts.PromptSpec` the prompt options describe (checked)."""
    if separator not in ("space", "newline"):
        raise EmolensError(f"unknown separator {separator!r}", "use 'space' or 'newline'")
    from emolens.inputs.prompts import PromptSpec, parse_shots  # lazy: it imports torch, which `--help` must not

    return PromptSpec(template=template, shots=parse_shots(shots), chat=chat,
                      separator=" " if separator == "space" else "\n")
