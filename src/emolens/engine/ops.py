"""The op vocabulary of the engine: what an intervention does at (site, layers, positions).

Every analysis is a list of these ops run by :class:`~emolens.engine.intervention.Intervention`:
capture (``Capture``), overwrite (``Set``, ``Mean``, ``Resample``, ``Zero``), shift (``Add``),
rescale (``Scale``), anything else (``Apply``), and block attention edges (``Knockout``). Ops are
plain data -- where they act and the values they carry -- so a list of them describes a condition
completely and conditions can be compared, logged or stacked.

An op's ``edit`` (and an ``Apply``'s ``fn``, when it takes two arguments) receives an
:class:`OpContext` -- the site, layer and positions being edited -- the way TransformerLens hooks
receive ``hook=``, so one function can serve many layers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from emolens.engine.positions import Positions
from emolens.errors import EmolensError

Layers = str | int | Sequence[int] | range | None
#: Attention implementations whose kernels take an arbitrary 4D mask (what ``Knockout`` edits).
MASKABLE = ("eager", "sdpa")


@dataclass(frozen=True)
class OpContext:
    """Where an op is acting right now: ``step`` is None on a prompt forward, else the decode step."""

    site: str
    layer: int
    positions: Positions
    step: int | None = None


@dataclass(eq=False)
class Op:
    """Base of every op: where it acts. ``heads`` restricts ops at the ``heads`` site.

    ``positions`` takes any spelling :meth:`Positions.of` accepts and is stored as
    :class:`Positions`. Ops act on prompt forwards only, unless ``every_token`` (also each token
    ``generate()`` adds) or positions ``"generated"`` (only those). ``rows`` (a ``slice``) confines
    the op to those batch rows, so several conditions stacked into one forward (rows
    condition-major) each edit only their own copy of the batch; the op then sees those rows as
    its batch (values with a batch dim, positions and spans are per row of the slice).
    """

    site: str
    layers: Layers = "all"
    positions: Positions | int | Sequence[int] | str | torch.Tensor = -1
    heads: int | Sequence[int] | None = None
    every_token: bool = False
    rows: slice | None = None

    def __post_init__(self) -> None:
        self.positions = Positions.of(self.positions)
        if self.rows is not None and (not isinstance(self.rows, slice) or not isinstance(self.rows.start, int)
                                      or not isinstance(self.rows.stop, int) or self.rows.step not in (None, 1)
                                      or not 0 <= self.rows.start < self.rows.stop):
            raise EmolensError(f"rows={self.rows!r} is not a contiguous slice of batch rows", "pass slice(start, stop)")

    def edit(self, x: torch.Tensor, value, ctx: OpContext) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    @property
    def value_tensor(self) -> torch.Tensor | float | None:
        return None


@dataclass(eq=False)
class Capture(Op):
    """Record the site at the positions. ``pool="mean"`` averages a span (required for spans).

    ``name`` keys ``run.captures`` (default: the site); ``dtype``/``device`` cast and move the
    gathered slice right away (a CUDA->CPU move is non-blocking; the context syncs on read).
    """

    pool: str | None = None
    name: str | None = None
    dtype: torch.dtype | None = None
    device: str | torch.device | None = None

    @property
    def key(self) -> str:
        return self.name or self.site


@dataclass(eq=False)
class Set(Op):
    """Replace the activation at the positions with ``value`` (see :func:`broadcast_value`)."""

    value: torch.Tensor | None = None
    dims: str | None = None

    def edit(self, x, value, ctx):
        return value.to(x.dtype).expand_as(x)

    @property
    def value_tensor(self):
        return self.value


@dataclass(eq=False)
class Add(Op):
    """Add ``value`` at the positions (steering, promotion)."""

    value: torch.Tensor | None = None
    dims: str | None = None

    def edit(self, x, value, ctx):
        return x + value.to(x.dtype)

    @property
    def value_tensor(self):
        return self.value


@dataclass(eq=False)
class Scale(Op):
    """Multiply the activation at the positions by ``factor`` (a number or a broadcastable tensor)."""

    factor: float | torch.Tensor = 1.0
    dims: str | None = None

    def edit(self, x, value, ctx):
        return x * (value.to(x.dtype) if isinstance(value, torch.Tensor) else value)

    @property
    def value_tensor(self):
        return self.factor


@dataclass(eq=False)
class Zero(Op):
    """Zero ablation (paper §6.1)."""

    def edit(self, x, value, ctx):
        return torch.zeros_like(x)


@dataclass(eq=False)
class Mean(Set):
    """Mean ablation: replace with a given mean activation (``value``, e.g. ``[d]`` or ``[layers, d]``)."""


@dataclass(eq=False)
class Resample(Op):
    """Replace with activations of *other* items: ``source`` is a pool ``[N, layers, P, *width]``.

    Row ``b`` takes pool item ``index[b]``; without ``index`` one item per row is drawn with a
    generator seeded by ``seed`` (the same draw for every layer and position of the op).
    """

    source: torch.Tensor | None = None
    index: torch.Tensor | Sequence[int] | None = None
    seed: int = 0

    def edit(self, x, value, ctx):
        return value.to(x.dtype).expand_as(x)


@dataclass(eq=False)
class Apply(Op):
    """Escape hatch: ``fn(selected)`` or ``fn(selected, ctx)`` returns the replacement.

    ``fn`` gets ``[B, P, *width]`` for int positions; for spans/``"all"`` it gets the whole
    ``[B, T, *width]`` and only the span's positions are kept. E.g. norm-matched random ablation
    (paper §6.2) without a new hook path; with ``ctx`` one function can tell the layers apart.
    """

    fn: Callable[..., torch.Tensor] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._with_ctx = False
        if self.fn is not None:
            try:
                params = inspect.signature(self.fn).parameters.values()
                positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                              and p.default is p.empty]
                self._with_ctx = len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)
            except (TypeError, ValueError):  # builtins without a signature take the tensor only
                self._with_ctx = False

    def edit(self, x, value, ctx):
        return self.fn(x, ctx) if self._with_ctx else self.fn(x)


@dataclass(eq=False)
class Knockout(Op):
    """Block attention edges from the query ``positions`` to the ``keys`` at ``layers`` (site ``attn``).

    Blocking an edge is what an attention mask already does -- the edge gets ``-inf`` before the
    softmax, so the row renormalises over the keys that remain -- so the op edits the mask each
    chosen attention module receives, not its weights, and fast kernels (SDPA) stay in play.
    ``heads`` restricts the block to some heads. Both position sets resolve against the forward's
    full attention mask, and queries align to the end of the keys, so one op serves a full prompt
    forward and a suffix step on a cached prefix alike.
    """

    keys: Positions | int | Sequence[int] | str | torch.Tensor = "context"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.keys = Positions.of(self.keys)
        if self.site != "attn":
            raise EmolensError(f"Knockout acts on attention modules (site 'attn'), not {self.site!r}")

    def block(self, queries: torch.Tensor, keys: torch.Tensor, q_len: int, kv_len: int,
              head_mask: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """``[B, 1 or H, q_len, kv_len]``: True where an edge is cut, queries and keys aligned to the end.

        ``kv_len`` is shorter than the batch on a sliding-window layer of a cached step, whose cache
        holds only the last keys.
        """
        total = keys.shape[1]
        q = queries[:, total - q_len:].to(device)
        out = q[:, None, :, None] & keys[:, total - kv_len:].to(device)[:, None, None, :]
        if head_mask is not None:
            out = out & head_mask.to(device)[None, :, None, None]
        return out


def edited_attention_mask(mask: torch.Tensor | None, block: torch.Tensor, total: int, q_len: int,
                          device: torch.device) -> torch.Tensor:
    """The attention mask with ``block``'s edges cut (bool: True = attend; float: additive).

    ``None`` (SDPA relying on ``is_causal``) is first spelled out as the causal mask it stands for.
    A query left with no key at all is an error rather than a row of NaNs.
    """
    if mask is None:
        cols = torch.arange(total, device=device)
        rows = torch.arange(total - q_len, total, device=device)
        mask = (cols[None, :] <= rows[:, None])[None, None]
    if mask.dtype == torch.bool:
        new = mask & ~block
        allowed = new
    else:
        new = torch.where(block, torch.finfo(mask.dtype).min, mask)
        allowed = new > torch.finfo(mask.dtype).min / 2
    if bool((block.any(-1) & ~allowed.any(-1)).any()):
        raise EmolensError("the knockout leaves some query with no key to attend to (keep at least one key "
                           "visible, e.g. the query's own position)")
    return new


def check_maskable(model) -> None:
    """Refuse attention kernels that ignore a 4D mask, rather than knock out nothing silently."""
    impl = getattr(model.config, "_attn_implementation", "eager")
    if impl not in MASKABLE:
        raise EmolensError(f"attention knockout needs an eager or SDPA attention kernel, this model uses {impl!r} "
                           "(load it with attn_implementation='sdpa')")


def broadcast_value(value: torch.Tensor, n_layers: int, batch: int, width_ndim: int,
                    dims: str | None = None) -> torch.Tensor:
    """View ``value`` as ``[B|1, L|1, P|1, *width]`` so one layer's slice broadcasts over ``[B, P, *width]``.

    Leading dims are named by ``dims`` (letters ``b``, ``l``, ``p`` in order), else inferred:
    none (``[d]``), ``blp`` (``[B, layers, P, d]``), or one leading dim that is the op's layers
    when its size equals their number (more than one layer) and the batch otherwise
    (``[layers, d]`` / ``[B, d]``). Where both readings fit, pass ``dims``.
    """
    lead = value.ndim - width_ndim
    if lead < 0:
        raise EmolensError(f"value of shape {tuple(value.shape)} has fewer dims than one activation")
    if dims is None:
        if lead == 0:
            dims = ""
        elif lead == 3:
            dims = "blp"
        elif lead == 1:
            size = value.shape[0]
            as_layers, as_batch = n_layers > 1 and size == n_layers, size in (batch, 1)
            if as_layers and as_batch and size != 1:
                raise EmolensError(f"value of shape {tuple(value.shape)} is ambiguous: {size} is both the "
                                   f"batch size and the number of layers", "pass dims='b' or dims='l'")
            dims = "l" if as_layers else "b"
        else:
            raise EmolensError(f"cannot tell the dims of a value of shape {tuple(value.shape)}",
                               "pass dims, e.g. dims='lp' for [layers, positions, d]")
    if len(dims) != lead or any(c not in "blp" for c in dims) or len(set(dims)) != len(dims) \
            or list(dims) != sorted(dims, key="blp".index):
        raise EmolensError(f"dims {dims!r} does not fit a value of shape {tuple(value.shape)}",
                           "name each leading dim once, in the order b, l, p")
    shape = []
    for name, size in (("b", batch), ("l", n_layers), ("p", None)):
        if name in dims:
            got = value.shape[dims.index(name)]
            if got not in (1, size) and size is not None:
                raise EmolensError(f"value dim {name!r} has size {got}, expected {size} or 1 (the batch size "
                                   "or the op's number of layers)")
            shape.append(got)
        else:
            shape.append(1)
    return value.reshape(*shape, *value.shape[lead:])
