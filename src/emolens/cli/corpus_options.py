"""The corpus option group, defined once and added to every command that takes ``--data``.

A user's own corpus needs its column names, a label map, its label set and its appraisal
columns; every data-taking command accepts the same flags with the same meaning, so they live
here and :func:`corpus_options` adds them to a command's signature. The command receives one
:class:`Corpus` (``corpus``) that loads and samples the data and says which label set it scores.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, replace

import typer

from emolens.errors import EmolensError

__all__ = ["OPTIONS", "Corpus", "corpus_options"]

#: (parameter, flag, help) of every option in the group; all are ``str | None`` except ``balanced``.
OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("text_column", "--text-column", "your file's text column (default: text)"),
    ("label_column", "--label-column", "your file's gold-label column (default: label)"),
    ("id_column", "--id-column", "your file's item-id column (default: id; else row numbers)"),
    ("label_map", "--label-map", "rename labels: old=new,old=new (case-insensitive)"),
    ("labels", "--labels", "the label set scored, probed and steered: a,b,c (default: the protocol's emotions "
                           "your file uses; every gold label must be in it)"),
    ("appraisal_columns", "--appraisal-columns", "appraisal ratings: name=column,... or column,... (names outside "
                                                 "crowd-enVENT's are kept as given)"),
)


@dataclass(frozen=True)
class Corpus:
    """The corpus flags of one command; :meth:`load` applies them."""

    text_column: str | None = None
    label_column: str | None = None
    id_column: str | None = None
    label_map: str | None = None
    labels: str | None = None
    appraisal_columns: str | None = None
    balanced: bool = False

    def columns(self):
        from emolens.data.loading import Columns, parse_pairs

        labels = None
        if self.labels is not None:
            labels = tuple(dict.fromkeys(s.strip().lower() for s in self.labels.split(",") if s.strip()))
            if len(labels) < 2:
                raise EmolensError(f"--labels {self.labels!r} names fewer than two labels", "pass --labels a,b,c")
        appraisals = parse_pairs(self.appraisal_columns, "--appraisal-columns") if self.appraisal_columns else None
        return Columns(text=self.text_column, label=self.label_column, id=self.id_column,
                       label_map=parse_pairs(self.label_map, "--label-map"), labels=labels, appraisals=appraisals)

    def load(self, data: str, limit: int = 0, seed: int = 0, **kwargs):
        """Load ``--data`` with these flags, then take the ``--limit`` sample (``--balanced``: N/K per label)."""
        from emolens.data.loading import load_dataset

        if limit < 0:
            raise EmolensError(f"--limit {limit} is negative", "pass --limit 0 (all items) or a positive N")
        if self.balanced and not limit:
            raise EmolensError("--balanced needs --limit N", "pass --limit N --balanced for N/K items per label")
        dataset = load_dataset(data, self.columns(), **kwargs)
        if limit:
            dataset = dataset.sample(limit, seed=seed, balanced=self.balanced)
        return dataset

    @staticmethod
    def prompt_for(spec, dataset):
        """``spec`` scoring the dataset's label set (so chance and macro metrics follow it)."""
        return replace(spec, labels=tuple(dataset.label_names))


def corpus_options(command):
    """Decorator: add the group's options to ``command`` and pass them as one ``corpus: Corpus``."""
    signature = inspect.signature(command)
    kept = [p for p in signature.parameters.values() if p.name != "corpus"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str | None,
                               default=typer.Option(None, flag, help=text, rich_help_panel="Your corpus"))
             for name, flag, text in OPTIONS]
    balanced = typer.Option(False, "--balanced", help="with --limit N: N/K items per label instead of proportional",
                            rich_help_panel="Your corpus")
    added.append(inspect.Parameter("balanced", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=balanced))
    names = [p.name for p in added]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        corpus = Corpus(**{name: kwargs.pop(name) for name in names})
        return command(*args, corpus=corpus, **kwargs)

    positional = [p for p in kept if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    keyword = [p.replace(kind=p.KEYWORD_ONLY) if p.kind == p.POSITIONAL_OR_KEYWORD else p for p in kept
               if p not in positional]
    wrapper.__signature__ = signature.replace(parameters=positional + keyword + added)
    hints = dict(getattr(command, "__annotations__", {}))
    hints.pop("corpus", None)
    hints.update({p.name: p.annotation for p in added})
    wrapper.__annotations__ = hints
    return wrapper
