"""Reply prompts for the control study: a message to answer, in raw-text or chat form.

A base model (gemma-3-270m) continues text, so the raw form frames the message as a letter and
ends in a reply cue it will continue. An instruction-tuned model answers a user turn, so the chat
form puts the message in a user turn of the tokenizer's own chat template and the cue is the
assistant header the template adds. Either way each :class:`~emolens.inputs.prompts.Prompt`
records the character spans of the instruction (the "reply calmly and kindly" baseline),
the message (``context``) and the reply cue (``answer``), so the engine's token masks address
them exactly as in the readout prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

from emolens.errors import EmolensError, arg
from emolens.inputs.prompts import Prompt

#: The prompt-side baseline a practitioner tries first.
CALM_INSTRUCTION = "Please reply calmly and kindly."
FORMS: tuple[str, ...] = ("auto", "raw", "chat")
#: Raw-text frame: the message as a quoted letter, then the cue the model continues.
RAW_HEAD = "A friend sent me this message:\n\""
RAW_TAIL = "\"\n\n"
RAW_CUE = "My reply:"

__all__ = ["CALM_INSTRUCTION", "FORMS", "reply_prompt", "reply_prompts", "resolve_form"]


def resolve_form(form: str, tokenizer) -> str:
    """``auto`` -> ``chat`` when the tokenizer has a chat template, else ``raw``."""
    if form not in FORMS:
        raise EmolensError(f"unknown prompt form {form!r}", f"use one of {list(FORMS)}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if form == "auto":
        return "chat" if has_template else "raw"
    if form == "chat" and not has_template:
        raise EmolensError("the chat form needs a tokenizer with a chat template",
                           f"use {arg('form', 'raw')} for base models such as gemma-3-270m")
    return form


def _raw(message: str, instruction: str | None) -> Prompt:
    parts: list[tuple[str, str | None]] = []
    if instruction:
        parts.append((instruction, "instruction"))
        parts.append(("\n\n", None))
    parts += [(RAW_HEAD, None), (message, "context"), (RAW_TAIL, None), (RAW_CUE, "answer")]
    text, spans = "", {"instruction": [], "shots": [], "context": [], "answer": []}
    for piece, name in parts:
        if name:
            spans[name].append((len(text), len(text) + len(piece)))
        text += piece
    return Prompt(text, spans, label_prefix=" ")


def _chat(message: str, instruction: str | None, tokenizer) -> Prompt:
    content = f"{instruction}\n\n{message}" if instruction else message
    turn = [{"role": "user", "content": content}]
    wrapped = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    bare = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=False)
    start = wrapped.find(content)
    if start < 0:
        raise EmolensError("the chat template rewrote the message text", f"use {arg('form', 'raw')}")
    if not wrapped.startswith(bare) or len(wrapped) == len(bare):
        raise EmolensError("the chat template adds no separate assistant header",
                           f"use {arg('form', 'raw')} for this tokenizer")
    msg_start = start + (len(instruction) + 2 if instruction else 0)
    spans = {"instruction": [(start, start + len(instruction))] if instruction else [], "shots": [],
             "context": [(msg_start, msg_start + len(message))], "answer": [(len(bare), len(wrapped))]}
    return Prompt(wrapped, spans, label_prefix="")


def reply_prompt(message: str, form: str, tokenizer=None, instruction: str | None = None) -> Prompt:
    """The prompt asking for a reply to ``message`` (``form`` already resolved: raw or chat)."""
    if form == "raw":
        return _raw(message, instruction)
    if form == "chat":
        if tokenizer is None:
            raise EmolensError("the chat form needs the model's tokenizer", "pass tokenizer=")
        return _chat(message, instruction, tokenizer)
    raise EmolensError(f"prompt form {form!r} is not resolved", "call resolve_form first")


def reply_prompts(messages: Sequence[str], form: str, tokenizer=None, instruction: str | None = None
                  ) -> list[Prompt]:
    """:func:`reply_prompt` for every message."""
    return [reply_prompt(m, form, tokenizer, instruction) for m in messages]
