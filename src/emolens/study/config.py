"""Study configs: one YAML file describes a whole study, validated before anything runs.

A config names the models, the data, the prompt, which items and activation slices to analyse,
which stages to run and each stage's sweep. Unknown keys are an error that names the key (a typo
must never silently fall back to a default), and every problem is one :class:`EmolensError` line.

Two presets ship with the package (``emolens/resources/presets``): ``paper`` (Tak et al.'s
protocol) and ``quick`` (a few minutes on a laptop CPU). A config may start from a preset with
``base: quick`` and override any key; nested sections merge key by key.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emolens.errors import EmolensError
from emolens.inputs.prompts import INSTRUCTIONS, SHOT_POOL, PromptSpec
from emolens.labels import ALL_APPRAISALS, EMOTIONS
from emolens.model.sites import SITES

#: Stages in execution order. Each stage runs once per model.
STAGE_ORDER: tuple[str, ...] = ("readout", "extract", "probe", "ablate", "patch", "knockout", "steer", "robustness",
                                "neurons", "control")
#: Stages a study runs only when its config lists them (long, a different question, or a use).
OPT_IN_STAGES: tuple[str, ...] = ("robustness", "neurons", "control")
#: What each stage needs to have run first (added automatically when missing from ``stages``).
STAGE_NEEDS: dict[str, tuple[str, ...]] = {
    "readout": (), "extract": ("readout",), "probe": ("readout", "extract"), "ablate": ("readout",),
    "patch": ("readout",), "knockout": ("readout",), "steer": ("readout", "extract", "probe"),
    "robustness": (), "neurons": (), "control": (),
}
PRESETS: tuple[str, ...] = ("quick", "paper")
#: The paper's appraisal surgery directions (paper-protocol §7.3), as steering specs.
SURGERY_DIRECTIONS: tuple[str, ...] = (
    "pleasantness+", "pleasantness-", "other_responsblt+", "other_responsblt-",
    "pleasantness+,other_responsblt+", "pleasantness+,other_responsblt-",
    "pleasantness-,other_responsblt+", "pleasantness-,other_responsblt-",
)

StageName = Literal["readout", "extract", "probe", "ablate", "patch", "knockout", "steer", "robustness", "neurons",
                    "control"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


Centers = Literal["all"] | list[int]


class DatasetConfig(_Section):
    """``spec``: crowd-envent, stimuli or a file path; ``limit``: seeded stratified sample (0 = all).

    ``fallback``: a dataset to use when ``spec`` cannot be loaded (e.g. crowd-enVENT is not
    reachable); it applies only when ``spec`` is the default corpus and no copy can be fetched,
    never to your own file. The run says which data it used and why (stderr, run.json, report).

    A corpus of your own is described by the same keys as the CLI's corpus options:
    ``text_column``, ``label_column``, ``id_column``, ``label_map`` (old: new), ``labels`` (the
    label set scored, probed and steered), ``appraisal_columns`` (name: column) and ``balanced``
    (``limit`` items as N/K per label).
    """

    spec: str = "crowd-envent"
    limit: int = Field(0, ge=0)
    seed: int = 0
    fallback: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    id_column: str | None = None
    label_map: dict[str, str] = Field(default_factory=dict)
    labels: list[str] | None = None
    appraisal_columns: dict[str, str] | None = None
    balanced: bool = False

    def columns(self):
        """These keys as :class:`emolens.data.loading.Columns`."""
        from emolens.data.loading import Columns

        return Columns(text=self.text_column, label=self.label_column, id=self.id_column,
                       label_map=dict(self.label_map), labels=tuple(self.labels) if self.labels else None,
                       appraisals=dict(self.appraisal_columns) if self.appraisal_columns else None)


class PromptsConfig(_Section):
    template: str = "T1"
    shots: list[str] = Field(default_factory=lambda: ["joy", "sadness"])
    separator: Literal["space", "newline"] = "space"
    chat: bool = False
    calibrate: bool = False
    #: ``paper``: the robustness stage sweeps the paper's 9 prompt variants; ``none``: no sweep.
    variants: Literal["paper", "none"] = "none"

    @field_validator("shots")
    @classmethod
    def _known_shots(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in SHOT_POOL]
        if unknown:
            raise ValueError(f"unknown shot emotion(s) {unknown}; choose from {list(SHOT_POOL)}")
        return value

    @field_validator("template")
    @classmethod
    def _known_template(cls, value: str) -> str:
        if value not in INSTRUCTIONS and "{text}" not in value:
            raise ValueError(f"unknown template {value!r}; use one of {list(INSTRUCTIONS)} or a string with {{text}}")
        return value


class ReadoutConfig(_Section):
    pass


class ExtractConfig(_Section):
    #: the store's dtype; ``auto``: the model's compute dtype, kept bit for bit (float32 on a CPU,
    #: float16 or bfloat16 for such a model on a GPU; ``activations.extract.store_dtype_for``);
    #: ``bfloat16``/``float16`` on a float32 model round its values
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    #: items per durable chunk (its host buffers scale with it); ``auto``: as many as a GiB of buffers
    #: holds, at least 256 (``activations.extract.auto_chunk_size``: larger chunks pad less)
    chunk_size: Annotated[int, Field(ge=1)] | Literal["auto"] = 256


class ProbeConfig(_Section):
    protocol: Literal["paper", "cv"] = "paper"
    probes: list[Literal["logistic", "mlp"]] = Field(default_factory=lambda: ["logistic"])
    appraisals: Literal["paper", "all", "none"] = "paper"
    controls: list[Literal["shuffled"]] = Field(default_factory=lambda: ["shuffled"])
    human_baseline: bool = True
    C: float = Field(1.0, gt=0)
    alpha: float = Field(5.0, gt=0)
    k: int = Field(5, ge=2)
    n_boot: int = Field(200, ge=10)
    max_iter: int = Field(1000, ge=1)
    #: standardise each slice's features with its training folds' statistics (``emolens probe
    #: --standardize``); off: raw activations, as the paper
    standardize: bool = False


class _Windowed(_Section):
    """Layer windows: ``spans`` consecutive layers centred on each of ``centers`` (every ``stride``-th)."""

    centers: Centers = "all"
    stride: int = Field(1, ge=1)
    max_items: int = Field(0, ge=0)


def _odd_spans(value: list[int]) -> list[int]:
    bad = [v for v in value if v < 1 or v % 2 == 0]
    if bad or not value:
        raise ValueError(f"spans must be positive odd numbers (windows are centred on a layer), got {value}")
    return value


def _known_sites(value: list[str]) -> list[str]:
    unknown = [s for s in value if s not in SITES]
    if unknown or not value:
        raise ValueError(f"unknown site(s) {unknown or value}; use {list(SITES)}")
    return _distinct(value, "sites")


def _distinct(value: list, what: str) -> list:
    if len(set(value)) != len(value):
        raise ValueError(f"repeated {what}")
    return value


class _Positioned(_Windowed):
    """Windows at token positions of the section's own: ablation and patching."""

    #: token positions edited (default: the study's ``positions``); each position -k runs a k-token
    #: suffix at every window, so the paper's per-model protocol (the last token) costs 1/15 of -1..-5
    positions: list[int] | None = Field(None, min_length=1)

    _positions = field_validator("positions")(classmethod(lambda cls, v: v if v is None else _distinct(v, "positions")))


class AblateConfig(_Positioned):
    kinds: list[Literal["zero", "random", "mean"]] = Field(default_factory=lambda: ["zero", "random"])
    spans: list[int] = Field(default_factory=lambda: [1, 3])

    _spans = field_validator("spans")(classmethod(lambda cls, v: _odd_spans(v)))


class PatchConfig(_Positioned):
    spans: list[int] = Field(default_factory=lambda: [1, 3, 5])
    pairs: int = Field(200, ge=1)

    _spans = field_validator("spans")(classmethod(lambda cls, v: _odd_spans(v)))


class KnockoutConfig(_Windowed):
    spans: list[int] = Field(default_factory=lambda: [3])
    #: attention edges cut from the answer cue to these prompt parts
    sources: list[str] = Field(default_factory=lambda: ["context", "shots", "instruction"])

    _spans = field_validator("spans")(classmethod(lambda cls, v: _odd_spans(v)))


class SteerConfig(_Windowed):
    betas: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0])
    #: ``unit``: beta in raw residual units (the paper; tiny on models with large residual norms such
    #: as Gemma); ``relative``: beta times the layer's mean residual norm, comparable across models
    scale: Literal["unit", "relative"] = "unit"
    span: int = Field(3, ge=1)  # odd: a window is centred on its layer
    site: Literal["resid"] = "resid"  # steering adds to the residual stream (the paper's loc 7)
    emotions: list[str] = Field(default_factory=lambda: ["anger", "joy", "pride", "fear", "guilt", "sadness"])
    directions: list[Literal["probe", "diffmean"]] = Field(default_factory=lambda: ["probe"])
    #: appraisal directions to steer (signed terms, e.g. ``pleasantness+,other_responsblt-``); default:
    #: the paper's surgery (pleasantness x other-agency, each sign and both pairs); ``[]`` for none
    appraisals: list[str] = Field(default_factory=lambda: list(SURGERY_DIRECTIONS))
    #: share of the items held out: directions are fitted on the rest and steering is measured on
    #: these (seeded, label-stratified; ``steering.fit_split``); 0 fits and steers every item with the
    #: probe stage's directions, as the paper did
    holdout: float = Field(0.5, ge=0, lt=1)
    #: norm-matched random directions per setting, drawn with the fit activations' covariance (99: p to 0.01)
    n_random: int = Field(99, ge=0)
    #: per direction, refits on ratings permuted within each emotion -- the null of appraisal
    #: information beyond emotion (``steering.nulls``); 0 skips it
    n_emotion_null: int = Field(39, ge=0)
    #: also steer each appraisal direction refitted on ratings residualised on the gold emotion, with
    #: ``n_emotion_null`` within-emotion refits of its own (alignment rows ``reference: residualised``)
    residualised: bool = True
    #: where the nulls run: ``every`` searched setting (the best setting's p is max-statistic corrected
    #: for the search), or only the ``selected`` one, chosen on half of the steered items and tested
    #: on the other half (``steering.selection``; ~1/settings of the null forwards)
    null_design: Literal["every", "selected"] = "every"
    generations: int = Field(0, ge=0)
    #: where generations steer: ``generated`` (the last prompt token and every generated token), ``last``, ``prompt``
    gen_position: Literal["generated", "last", "prompt"] = "generated"
    #: window and beta of the generations: ``best`` (highest theory alignment), ``middle`` or a centre layer
    gen_window: Literal["best", "middle"] | int = "best"

    @field_validator("appraisals")
    @classmethod
    def _known_appraisals(cls, value: list[str]) -> list[str]:
        for spec in value:
            for term in spec.split(","):
                name = term.strip().rstrip("+-").strip()
                if name not in ALL_APPRAISALS:
                    raise ValueError(f"unknown appraisal {name!r} in {spec!r}; use {list(ALL_APPRAISALS)}")
        return value

    @field_validator("emotions")
    @classmethod
    def _known_emotions(cls, value: list[str]) -> list[str]:
        unknown = [e for e in value if e not in EMOTIONS]
        if unknown:
            raise ValueError(f"unknown emotion(s) {unknown}; use {list(EMOTIONS)}")
        return value

    _span = field_validator("span")(classmethod(lambda cls, v: _odd_spans([v])[0]))


class RobustnessConfig(_Section):
    """The prompt-variant sweep: a readout per variant, plus the ``analyses`` re-run per variant
    (``probe``: the emotion probe at position -1 per study site, with the probe section's settings;
    ``ablate``: zero ablation of ``sites`` over windows of ``spans``; ``patch``: activation patching
    of ``sites`` over the same windows, ``pairs`` pairs), each at the answer cue."""

    #: items per prompt variant (a seeded stratified sample of the study's items; 0 = all of them)
    limit: int = Field(0, ge=0)
    analyses: list[Literal["probe", "ablate", "patch"]] = Field(default_factory=list)
    sites: list[str] = Field(default_factory=lambda: ["attn"])
    spans: list[int] = Field(default_factory=lambda: [3])
    centers: Centers = "all"
    stride: int = Field(1, ge=1)
    pairs: int = Field(200, ge=1)

    _spans = field_validator("spans")(classmethod(lambda cls, v: _odd_spans(v)))

    _sites = field_validator("sites")(classmethod(lambda cls, v: _known_sites(v)))

    _once = field_validator("analyses")(classmethod(lambda cls, v: _distinct(v, "analyses")))


class NeuronsConfig(_Section):
    """Appraisal neurons (``emolens neurons``): per-neuron r / partial r with every appraisal from one
    streaming pass, top-k sparse probes at ``probe_layers``, mean ablation of the top ``ablate_k``
    neurons of each ``ablate`` appraisal against ``random_sets`` matched random sets, and the
    minimal-pair agreement on the built-in stimuli (``pairs``)."""

    #: items of the pass (a seeded stratified sample of the study's items; 0 = all of them)
    limit: int = Field(0, ge=0)
    appraisals: Literal["all", "paper"] | list[str] = "all"
    #: layers of the sparse probes: "auto" (four spread layers) or explicit ids
    probe_layers: Literal["auto"] | list[int] = "auto"
    ks: list[int] = Field(default_factory=list)
    ablate: list[str] = Field(default_factory=lambda: ["other_responsblt"])
    ablate_k: int = Field(50, ge=1)
    random_sets: int = Field(19, ge=1)
    ablation_items: int = Field(40, ge=5)
    pairs: bool = True


class ControlStageConfig(_Section):
    """The control study (``emolens control`` as a stage; see ``docs/control.md``): replies to the
    built-in sensitive messages, clean, instructed and steered along ``directions`` at ``betas``;
    directions fitted on ``fit_items`` of the study's items, readout retention measured on
    ``retention_items`` others."""

    directions: list[str] = Field(default_factory=lambda: ["other_responsblt-", "pleasantness+", "self_control+",
                                                           "anger-"], min_length=1)
    #: replies at these; on qwen2.5-coder-0.5b β 0.1 already breaks perplexity (docs/control.md)
    betas: list[float] = Field(default_factory=lambda: [0.02, 0.05], min_length=1)
    #: capability only (no replies) at these too, so the verdict can name the β where it breaks
    capability_betas: list[float] = Field(default_factory=lambda: [0.1, 0.2])
    scale: Literal["unit", "relative"] = "relative"
    span: int = Field(3, ge=1)
    form: Literal["auto", "raw", "chat"] = "auto"
    #: sensitive messages replied to (a seeded sample stratified by emotion; 0 = all 126)
    messages: int = Field(0, ge=0)
    max_new_tokens: int = Field(40, ge=1)
    fit_items: int = Field(260, ge=2)
    retention_items: int = Field(65, ge=1)
    n_boot: int = Field(1000, ge=10)

    @field_validator("betas", "capability_betas")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(b <= 0 for b in value):
            raise ValueError("betas must be positive (beta 0, the clean run, always runs)")
        return value

    @field_validator("directions")
    @classmethod
    def _known_terms(cls, value: list[str]) -> list[str]:
        for spec in value:
            for term in spec.split(","):
                name = term.strip().rstrip("+-").strip()
                if name not in ALL_APPRAISALS and name not in EMOTIONS:
                    raise ValueError(f"unknown appraisal or emotion {name!r} in {spec!r}")
        return value


class StudyConfig(_Section):
    """A whole study. See ``docs/pipeline.md`` for every key."""

    name: str = "study"
    models: list[str] = Field(default_factory=lambda: ["gemma-3-270m"], min_length=1)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    items: Literal["all", "correct"] = "all"
    sites: list[str] = Field(default_factory=lambda: ["attn", "mlp", "resid"], min_length=1)
    layers: Literal["all"] | list[int] = "all"
    positions: list[int] = Field(default_factory=lambda: [-1], min_length=1)
    stages: list[StageName] = Field(default_factory=lambda: [s for s in STAGE_ORDER if s not in OPT_IN_STAGES],
                                    min_length=1)
    readout: ReadoutConfig = Field(default_factory=ReadoutConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    ablate: AblateConfig = Field(default_factory=AblateConfig)
    patch: PatchConfig = Field(default_factory=PatchConfig)
    knockout: KnockoutConfig = Field(default_factory=KnockoutConfig)
    steer: SteerConfig = Field(default_factory=SteerConfig)
    robustness: RobustnessConfig = Field(default_factory=RobustnessConfig)
    neurons: NeuronsConfig = Field(default_factory=NeuronsConfig)
    control: ControlStageConfig = Field(default_factory=ControlStageConfig)
    seed: int = 0
    device: str = "auto"
    #: accelerate placement for models larger than one device: auto, balanced, balanced_low_0,
    #: sequential, or {module name: device | cpu | disk}; then ``device`` is ignored
    device_map: Literal["auto", "balanced", "balanced_low_0", "sequential"] | dict[str, int | str] | None = None
    max_memory: dict[str, str] | None = None  # per device cap with device_map, e.g. {"0": "70GiB", "cpu": "200GiB"}
    offload_folder: str | None = None  # where device_map's "disk" weights go (when they must be copied)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    #: prompts per forward; ``auto``: chosen from the free memory of the model's device when a stage
    #: runs (``engine.memory.auto_batch_size``: 16 on a CPU, up to 256 on a GPU)
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = 16
    output: str = "runs"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or any(c in value for c in "/\\") or value.startswith("."):
            raise ValueError("must be a plain folder-safe name")
        return value

    _sites = field_validator("sites")(classmethod(lambda cls, v: _known_sites(v)))

    _positions = field_validator("positions")(classmethod(lambda cls, v: _distinct(v, "positions")))

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[str]) -> list[str]:
        slugs = [model_slug(m) for m in value]
        if len(set(slugs)) != len(slugs):
            raise ValueError("two models map to the same folder name; list each model once")
        return value

    @model_validator(mode="after")
    def _placement(self) -> StudyConfig:
        if self.device_map is None and (self.max_memory or self.offload_folder):
            raise ValueError("'max_memory' and 'offload_folder' need 'device_map'")
        return self

    @model_validator(mode="after")
    def _stage_deps(self) -> StudyConfig:
        """Add the stages every requested stage needs, and keep the canonical order."""
        wanted = set(self.stages)
        for stage in list(wanted):
            wanted.update(STAGE_NEEDS[stage])
        if "robustness" in wanted and self.prompts.variants == "none":
            raise ValueError("'stages' has 'robustness' but 'prompts.variants' is none: set prompts.variants: paper "
                             "or drop robustness from stages")
        self.stages = [s for s in STAGE_ORDER if s in wanted]
        return self

    # -- identity ----------------------------------------------------------------------------

    def canonical(self) -> dict[str, Any]:
        """Everything that defines the study's results (the output root and the model's placement
        are where, not what: a dispatched model gives the same numbers; its dtype is in the stage keys)."""
        return self.model_dump(mode="json", exclude={"output", "device_map", "max_memory", "offload_folder"})

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`emolens.model.loading.load_model` for this study's models."""
        kwargs: dict[str, Any] = {"dtype": self.dtype, "device": self.device}
        if self.device_map is not None:
            kwargs["device_map"] = self.device_map
            if self.max_memory:
                kwargs["max_memory"] = {int(k) if str(k).isdigit() else k: v for k, v in self.max_memory.items()}
            if self.offload_folder:
                kwargs["offload_folder"] = self.offload_folder
        return kwargs

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.canonical(), sort_keys=True).encode()).hexdigest()

    def prompt_spec(self, template: str | None = None, shots: list[str] | tuple[str, ...] | None = None):
        p = self.prompts
        return PromptSpec(template=template or p.template, shots=tuple(p.shots if shots is None else shots),
                          chat=p.chat, separator=" " if p.separator == "space" else "\n")


def model_slug(spec: str) -> str:
    """A folder name for a model spec: ``tiny:llama`` -> ``tiny-llama``, ``org/name`` -> ``org--name``."""
    text = spec.replace("/", "--").replace(":", "-")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


# ----------------------------------------------------------------------------------------------
# loading


def _format_error(exc: ValidationError, where: str) -> str:
    errors = exc.errors()
    first = errors[0]
    key = ".".join(str(p) for p in first["loc"])
    if not key:
        msg = first["msg"].removeprefix("Value error, ")
    elif first["type"] == "extra_forbidden":
        msg = f"unknown key {key!r}"
        parent = _allowed_keys(first["loc"][:-1])
        if parent:
            msg += f" (allowed: {', '.join(parent)})"
    else:
        text = first["msg"].removeprefix("Value error, ")
        msg = f"bad value for {key!r}: {text}"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"config {where}: {msg}{more}"


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = StudyConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(model.model_fields)


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def preset_text(name: str) -> str:
    if name not in PRESETS:
        raise EmolensError(f"unknown preset {name!r}", f"use one of {list(PRESETS)}")
    return resources.files("emolens").joinpath(f"resources/presets/{name}.yaml").read_text()


def _parse_yaml(text: str, where: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" at line {mark.line + 1}" if mark is not None else ""
        raise EmolensError(f"config {where} is not valid YAML{pos}", "fix the syntax") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise EmolensError(f"config {where} must be a mapping of keys", "see docs/pipeline.md for the format")
    return data


def config_from_dict(data: dict[str, Any], where: str = "(dict)") -> StudyConfig:
    """Validate a config mapping (``base: <preset>`` merges the preset underneath)."""
    data = dict(data)
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise EmolensError(f"config {where}: bad value for 'base': {base!r}", f"use one of {list(PRESETS)}")
        data = _merge(_parse_yaml(preset_text(base), f"preset {base!r}"), data)
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise EmolensError(_format_error(exc, where)) from None


def load_preset(name: str) -> StudyConfig:
    return config_from_dict(_parse_yaml(preset_text(name), f"preset {name!r}"), f"preset {name!r}")


def load_config(source: str | Path) -> StudyConfig:
    """A config from a YAML file, or a preset by name (``quick``, ``paper``)."""
    text = str(source)
    if text in PRESETS and not Path(text).exists():
        return load_preset(text)
    path = Path(text).expanduser()
    if not path.exists():
        raise EmolensError(f"config file {text!r} does not exist", f"pass a YAML file or one of {list(PRESETS)}")
    data = _parse_yaml(path.read_text(), repr(path.name))
    data.setdefault("name", path.stem)
    return config_from_dict(data, repr(path.name))
