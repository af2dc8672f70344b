"""Few-shot prompts of the protocol, each knowing the character spans of its parts.

Tak et al. build plain-text prompts ``<instruction> Context: <shot> Answer: <label> ...
Context: <text> Answer:`` (paper-protocol §2.1). Later analyses need to address prompt parts
(ablate the context, knock out attention from the answer cue to the shots), so every
:class:`Prompt` records the spans of ``instruction``, ``shots``, ``context`` and ``answer`` and
batching turns them into token masks with the tokenizer's offset mapping -- no hard-coded token
slices per model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from emolens.errors import EmolensError
from emolens.labels import EMOTIONS

#: The paper's instruction strings by template name (T1 is its default).
INSTRUCTIONS: dict[str, str] = {
    "T1": "What are the inferred emotions in the following contexts?",
    "T2": "Consider this list of emotions: anger, boredom, disgust, fear, guilt, joy, pride, relief, sadness, "
          "shame, surprise, trust, neutral. What are the inferred emotions in the following contexts?",
    "T3": "",
    "T4": "Guess the emotion.",
    "T5": "Decipher the emotion from the following statements:",
    "T6": "Decipher the label for the following statements:",
    "T7": "What is the label, for the statement?",
    "T8": "What is the label, given the context?",
}

#: The paper's pool of shot texts, one per emotion (paper-protocol §2.1).
SHOT_POOL: dict[str, str] = {
    "anger": "My husband missed an important call, because his phone was on silent AGAIN!",
    "boredom": "At work, my job is far to mind numbing and it does not challenge me.",
    "disgust": "I saw mouldy food.",
    "fear": "I was confronted by a thief.",
    "guilt": "I booked a night away with friends and my children were upset that I was going to a hotel "
             "without them.",
    "joy": "My first child was born.",
    "neutral": "I walked to the village near my home.",
    "pride": "I was recognised for doing well at work by my line manager.",
    "relief": "I found out my mam didn't need a serious surgery.",
    "sadness": "My dog died last week.",
    "shame": "I failed a maths test and the teacher called me out in front of the class.",
    "surprise": "I saw my teacher on an aeroplane!",
    "trust": "I gave my wallet to a friend.",
}

#: The first-word control task (paper §5.5): same format, a surface-level target.
FIRST_WORD_INSTRUCTION = "What is the first word in the following contexts?"
FIRST_WORD_SHOTS: tuple[tuple[str, str], ...] = (("My dog died last week.", "My"), ("I saw mouldy food.", "I"))

#: The paper's prompt-robustness study (paper-protocol §2.2): (name, template, shots).
PAPER_PROMPT_VARIANTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("T1-2shot", "T1", ("joy", "sadness")),
    ("T2-2shot", "T2", ("joy", "sadness")),
    ("T3-2shot", "T3", ("joy", "sadness")),
    ("T4-2shot", "T4", ("joy", "sadness")),
    ("T1-1shot", "T1", ("anger",)),
    ("T1-3shot", "T1", ("anger", "boredom", "disgust")),
    ("T1-6shot", "T1", ("anger", "boredom", "disgust", "fear", "guilt", "joy")),
    ("T1-9shot", "T1", ("anger", "boredom", "disgust", "fear", "guilt", "joy", "neutral", "pride", "relief")),
    ("T1-12shot", "T1", tuple(e for e in EMOTIONS if e != "trust")),
)

SPAN_NAMES: tuple[str, ...] = ("instruction", "shots", "context", "answer")


@dataclass(frozen=True)
class Prompt:
    """A built prompt: its text, the character spans of its parts, and how labels follow it.

    ``label_prefix`` is what separates the answer cue from the label (a space in plain prompts,
    nothing after a chat template's assistant header), so readout scores the label tokens the
    model would really emit.
    """

    text: str
    spans: dict[str, list[tuple[int, int]]]
    label_prefix: str = " "


@dataclass(frozen=True)
class PromptSpec:
    """How to turn an event description into a prompt; hashable into every manifest.

    ``template`` is a name from :data:`INSTRUCTIONS` or a custom string containing ``{text}``;
    ``shots`` are emotion names from :data:`SHOT_POOL`; ``task`` is ``emotion`` or ``first-word``;
    ``separator`` joins the parts (the paper uses a space; ``"\\n"`` helps small base models);
    ``chat`` wraps the whole prompt as one user turn with the tokenizer's chat template.
    """

    template: str = "T1"
    shots: tuple[str, ...] = ("joy", "sadness")
    task: str = "emotion"
    separator: str = " "
    chat: bool = False
    labels: tuple[str, ...] = field(default=EMOTIONS)

    def __post_init__(self) -> None:
        if self.task not in ("emotion", "first-word"):
            raise EmolensError(f"unknown task {self.task!r}", "use 'emotion' or 'first-word'")
        if "{text}" not in self.template and self.template not in INSTRUCTIONS:
            raise EmolensError(f"unknown template {self.template!r}",
                               f"use one of {list(INSTRUCTIONS)} or a string containing {{text}}")
        unknown = [s for s in self.shots if s not in SHOT_POOL]
        if unknown:
            raise EmolensError(f"unknown shot emotion(s) {unknown}", f"choose shots from {list(SHOT_POOL)}")

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def build(self, text: str, tokenizer=None) -> Prompt:
        """Build the prompt for one text (the tokenizer is needed only for chat wrapping)."""
        if "{text}" in self.template:
            prompt = _custom_prompt(self.template, text)
        elif self.task == "first-word":
            prompt = _few_shot(FIRST_WORD_INSTRUCTION, FIRST_WORD_SHOTS, text, self.separator)
        else:
            shots = tuple((SHOT_POOL[e], e) for e in self.shots)
            prompt = _few_shot(instruction(self.template, self.labels), shots, text, self.separator)
        return _wrap_chat(prompt, tokenizer) if self.chat else prompt


def instruction(template: str, labels: Sequence[str] = EMOTIONS) -> str:
    """The instruction of a named template for a label set.

    T2 names the emotions to choose from. With the paper's 13 it is the paper's sentence word for
    word; with another label set (``--labels``, a corpus of its own) it lists those labels, so
    the prompt never offers answers that are not scored.
    """
    if template == "T2" and set(labels) != set(EMOTIONS):
        return (f"Consider this list of emotions: {', '.join(labels)}. "
                "What are the inferred emotions in the following contexts?")
    return INSTRUCTIONS[template]


def parse_shots(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"joy,sadness"`` -> ``("joy", "sadness")``; ``""``/``"none"`` -> zero-shot."""
    if value is None:
        return ()
    if isinstance(value, str):
        if value.strip().lower() in ("", "none", "0"):
            return ()
        value = value.split(",")
    return tuple(v.strip() for v in value if v.strip())


def build_prompts(texts: Sequence[str], spec: PromptSpec | None = None, tokenizer=None) -> list[Prompt]:
    """Build one prompt per text with the same spec."""
    spec = spec or PromptSpec()
    return [spec.build(t, tokenizer) for t in texts]


class _Builder:
    """Appends text pieces while recording named spans."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.spans: dict[str, list[tuple[int, int]]] = {name: [] for name in SPAN_NAMES}

    def add(self, piece: str, span: str | None = None) -> None:
        if span is not None and piece:
            self.spans[span].append((self.length, self.length + len(piece)))
        self.parts.append(piece)
        self.length += len(piece)

    def prompt(self, label_prefix: str = " ") -> Prompt:
        return Prompt("".join(self.parts), {k: v for k, v in self.spans.items()}, label_prefix)


def _few_shot(instruction: str, shots: Sequence[tuple[str, str]], text: str, sep: str) -> Prompt:
    b = _Builder()
    b.add(instruction, "instruction")
    for shot_text, label in shots:
        b.add(sep if b.length else (" " if sep == " " else ""))
        b.add(f"Context: {shot_text} Answer: {label}", "shots")
    b.add(sep if b.length else (" " if sep == " " else ""))
    b.add("Context: ")
    b.add(text, "context")
    b.add(" ")
    b.add("Answer:", "answer")
    return b.prompt()


def _custom_prompt(template: str, text: str) -> Prompt:
    before, after = template.split("{text}", 1)
    b = _Builder()
    b.add(before, "instruction")
    b.add(text, "context")
    b.add(after, "answer")
    prefix = "" if after.endswith((" ", "\n")) else " "
    return b.prompt(prefix)


def _wrap_chat(prompt: Prompt, tokenizer) -> Prompt:
    """Place the prompt as one user turn; spans shift by where it lands in the chat text."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise EmolensError("chat wrapping needs a tokenizer with a chat template",
                           "use a plain prompt (chat off) for base models such as gemma-3-270m")
    wrapped = tokenizer.apply_chat_template([{"role": "user", "content": prompt.text}], tokenize=False,
                                            add_generation_prompt=True)
    offset = wrapped.find(prompt.text)
    if offset < 0:
        raise EmolensError("the chat template rewrote the prompt text", "use a plain prompt (chat off)")
    spans = {k: [(s + offset, e + offset) for s, e in v] for k, v in prompt.spans.items()}
    return Prompt(wrapped, spans, label_prefix="")
