"""Steered generation and its fluency guard.

Continues an event description under steering, reads the continuation's emotion with the model's
own label scoring, and flags degenerate text by its log-probability under the unsteered model and
by repetition and symbol signals, each also against the clean continuation of the same prompt
(:func:`fluency_flags`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from transformers import DynamicCache

from emolens.engine.intervention import Intervention
from emolens.engine.prefix import tile_cache
from emolens.engine.scoring import LabelScorer
from emolens.errors import EmolensError
from emolens.inputs.prompts import PromptSpec, build_prompts
from emolens.readout import score_prompts
from emolens.steering.apply import steer_positions, steering_op
from emolens.steering.sweep import Condition, layers_text


@torch.no_grad()
def continuation_logprob(lm, prompts: Sequence[str], continuations: Sequence[str], batch_size: int = 16
                         ) -> np.ndarray:
    """Mean per-token log-probability of each continuation given its prompt, under the *unsteered* model.

    The fluency guard: steering that breaks the model produces text the clean model finds very
    unlikely (or repeats one token), which shows here before anyone reads the samples.

    The prompt and the continuation are tokenised separately (the continuation's tokens are the
    ones scored). A prompt shared by several continuations (the clean and every steered reply to
    one message) runs once: its key/value cache is copied for each continuation, so the pass
    costs one prompt plus the replies instead of one prompt per reply. The rest run in
    length-sorted batches, *right*-padded: every real token keeps its position ids and the
    padding sits after it, so causal attention never sees it. Either way the score equals the
    one-at-a-time score. An empty continuation scores NaN.
    """
    out = np.full(len(prompts), np.nan)
    tok = lm.tokenizer
    groups: dict[str, list[tuple[int, list[int]]]] = {}
    for i, (p, c) in enumerate(zip(prompts, continuations, strict=True)):
        c_ids = tok(c, add_special_tokens=False)["input_ids"]
        if c_ids:
            groups.setdefault(p, []).append((i, list(c_ids)))
    singles = []
    for p, rows in groups.items():
        p_ids = list(tok(p)["input_ids"])
        if len(rows) < 2 or not _shared_prompt_logprob(lm, p_ids, rows, out, batch_size):
            singles += [(i, p_ids, c) for i, c in rows]
    singles.sort(key=lambda r: len(r[1]) + len(r[2]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for s in range(0, len(singles), batch_size):
        chunk = singles[s:s + batch_size]
        width = max(len(p) + len(c) for _, p, c in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, (_, p, c) in enumerate(chunk):
            ids[r, :len(p) + len(c)] = torch.tensor(p + c)
            mask[r, :len(p) + len(c)] = 1
        lo = min(len(p) for _, p, _ in chunk) - 1  # no logits over the prompts: the vocabulary is the big matmul
        logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                          logits_to_keep=width - lo).logits
        logp = torch.log_softmax(logits.float(), -1)
        for r, (i, p, c) in enumerate(chunk):
            target = torch.tensor(c, device=logp.device)
            out[i] = float(logp[r, len(p) - 1 - lo:len(p) + len(c) - 1 - lo].gather(-1, target[:, None]).mean())
    return out


def _shared_prompt_logprob(lm, p_ids: list[int], rows: list[tuple[int, list[int]]], out: np.ndarray,
                           batch_size: int) -> bool:
    """Score every continuation in ``rows`` on one run of the prompt ``p_ids`` (False: the cache cannot
    be copied safely, and the caller runs full forwards instead)."""
    try:
        cache = DynamicCache(config=lm.model.config)
    except Exception:  # noqa: BLE001 - a config DynamicCache cannot build: full forwards
        return False
    P = len(p_ids)
    first = lm.model(input_ids=torch.tensor([p_ids], device=lm.device), cache=cache, use_cache=True,
                     logits_to_keep=1).logits[0, -1].float().log_softmax(-1)
    if cache.get_seq_length() != P or tile_cache(cache, 1) is None:
        return False
    for s in range(0, len(rows), batch_size):
        chunk = rows[s:s + batch_size]
        width = max(len(c) for _, c in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.ones((len(chunk), P + width), dtype=torch.long)
        for r, (_, c) in enumerate(chunk):
            ids[r, :len(c)] = torch.tensor(c)
            mask[r, P + len(c):] = 0
        position_ids = torch.arange(P, P + width)[None].repeat(len(chunk), 1)
        logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                          position_ids=position_ids.to(lm.device), cache=tile_cache(cache, len(chunk)),
                          use_cache=True).logits
        logp = torch.log_softmax(logits.float(), -1)
        for r, (i, c) in enumerate(chunk):
            target = torch.tensor(c, device=logp.device)
            lp = torch.cat([first[c[0]][None], logp[r, :len(c) - 1].gather(-1, target[1:, None]).squeeze(-1)])
            out[i] = float(lp.mean())
    return True


@torch.no_grad()
def generate_steered(lm, texts: Sequence[str], layers: Sequence[int] | None = None,
                     vector: torch.Tensor | None = None, position: str = "generated", max_new_tokens: int = 24,
                     batch_size: int = 8) -> list[str]:
    """Greedy continuations of ``texts`` with ``vector [L, d]`` added at ``layers``.

    ``position``: ``last`` (the prompt's last token, prefill only), ``prompt`` (every prompt
    token but the first) or ``generated`` (the last prompt token and every generated token, via
    the KV-cached decode steps). ``vector=None`` generates unsteered.
    """
    tok = lm.tokenizer
    tok.padding_side = "left"
    out: list[str] = []
    for s in range(0, len(texts), batch_size):
        chunk = list(texts[s:s + batch_size])
        enc = tok(chunk, return_tensors="pt", padding=True).to(lm.device)
        kw = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        if vector is None:
            gen = lm.model.generate(**enc, **kw)
        else:
            pmask = steer_positions(position).mask(enc["attention_mask"])
            op = steering_op(layers, vector.to(lm.device, lm.dtype), pmask, every_token=position == "generated")
            with Intervention(lm, [op]):
                gen = lm.model.generate(**enc, **kw)
        new = gen[:, enc["input_ids"].shape[1]:]
        out.extend(tok.decode(row, skip_special_tokens=True) for row in new)
    return out


@torch.no_grad()
def generate_conditions(lm, texts: Sequence[str], settings: Sequence[tuple[Sequence[int], torch.Tensor] | None],
                        position: str = "generated", max_new_tokens: int = 24, batch_size: int = 8
                        ) -> list[list[str]]:
    """Greedy continuations of ``texts`` under each of ``settings`` (``(layers, vector)``, or ``None``
    for unsteered): one list of replies per setting, each equal to :func:`generate_steered`'s.

    Steering at ``generated`` changes nothing before a prompt's last token, so every setting
    shares the clean key/value cache of each batch's prompts but their last token: it is computed
    once per batch and forked per setting, and each setting's ``generate`` runs only the last
    prompt token and the new tokens. With five settings on one prompt set this removes four of
    the five prompt prefills, which dominate short replies on a CPU. Other positions, or a cache
    that cannot be forked safely, run :func:`generate_steered` per setting.
    """
    if position != "generated" or len(settings) < 2:
        return [generate_steered(lm, texts, *(s or (None, None)), position, max_new_tokens, batch_size)
                for s in settings]
    tok = lm.tokenizer
    tok.padding_side = "left"
    out: list[list[str]] = [[] for _ in settings]
    for s in range(0, len(texts), batch_size):
        enc = tok(list(texts[s:s + batch_size]), return_tensors="pt", padding=True).to(lm.device)
        prefix = _prompt_prefix(lm, enc["input_ids"], enc["attention_mask"])
        for k, setting in enumerate(settings):
            kw = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            if prefix is not None:
                kw["cache"] = tile_cache(prefix, 1)
            if setting is None:
                gen = lm.model.generate(**enc, **kw)
            else:
                layers, vector = setting
                pmask = steer_positions(position).mask(enc["attention_mask"])
                op = steering_op(layers, vector.to(lm.device, lm.dtype), pmask, every_token=True)
                with Intervention(lm, [op]):
                    gen = lm.model.generate(**enc, **kw)
            new = gen[:, enc["input_ids"].shape[1]:]
            out[k].extend(tok.decode(row, skip_special_tokens=True) for row in new)
    return out


@torch.no_grad()
def generate_stacked(lm, texts: Sequence[str], layers: Sequence[int],
                     vectors: Sequence[torch.Tensor | None], position: str = "generated",
                     max_new_tokens: int = 24, rows: int = 64) -> list[list[str]] | None:
    """Greedy continuations of ``texts`` under each of ``vectors`` (``[L, d]`` at ``layers``, ``None``:
    unsteered) from ONE batched ``generate`` per chunk: rows setting-major, each row adding its own
    setting's vector (zeros for unsteered: ``x + 0`` is ``x``), so a decode step serves every setting.

    Why: a study's sample generations are a few texts under a handful of settings in one window;
    one ``generate`` per setting paid every decode step's fixed cost (18 layers, the output head)
    once per setting -- on gemma-3-270m most of the steer stage's time after the sweep. Every
    setting must steer the same ``layers``; ``None`` when there is nothing to stack.
    """
    if not texts or len(vectors) < 2:
        return None
    tok = lm.tokenizer
    tok.padding_side = "left"
    d = next(v for v in vectors if v is not None).shape[-1] if any(v is not None for v in vectors) else None
    if d is None:
        return None
    zero = torch.zeros(len(layers), d)
    values = torch.stack([(zero if v is None else v.detach().float().cpu()) for v in vectors])  # [S, L, d]
    out: list[list[str]] = [[] for _ in vectors]
    per = max(1, rows // len(vectors))
    for s in range(0, len(texts), per):
        chunk = list(texts[s:s + per])
        enc = tok(chunk, return_tensors="pt", padding=True).to(lm.device)
        stacked = {k: v.repeat(len(vectors), 1) for k, v in enc.items()}  # setting-major rows
        value = values.repeat_interleave(len(chunk), 0).to(lm.device, lm.dtype)  # [S * b, L, d]
        pmask = steer_positions(position).mask(stacked["attention_mask"])
        op = steering_op(list(layers), value, pmask, every_token=position == "generated")
        with Intervention(lm, [op]):
            gen = lm.model.generate(**stacked, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tok.pad_token_id)
        new = gen[:, enc["input_ids"].shape[1]:]
        for k in range(len(vectors)):
            out[k].extend(tok.decode(row, skip_special_tokens=True) for row in new[k * len(chunk):(k + 1) * len(chunk)])
    return out


def _prompt_prefix(lm, ids: torch.Tensor, mask: torch.Tensor):
    """The clean cache of a left-padded batch's every column but the last, with ``generate``'s position
    ids (``None``: the batch is too short, or the cache cannot be forked)."""
    if ids.shape[1] < 2 or not bool(mask[:, -1].bool().all()) or int(mask[:, :-1].sum(1).min()) < 1:
        return None
    try:
        cache = DynamicCache(config=lm.model.config)
    except Exception:  # noqa: BLE001 - a config DynamicCache cannot build: no shared prefix
        return None
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    lm.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], cache=cache,
             use_cache=True, logits_to_keep=1)
    if cache.get_seq_length() != ids.shape[1] - 1 or tile_cache(cache, 1) is None:
        return None
    return cache


_WORD = re.compile(r"\S+")
#: A line that reads as source code rather than prose: imports, definitions, assignments,
#: statement punctuation at the end, calls on dotted names, comment markers. Not ``# text``: that
#: is a markdown heading as often as a comment (:data:`_HASH_LINE`).
_CODE_LINE = re.compile(
    r"""^(\.?(import|from)\s+[\w.]+"""
    r"""|(def|class|public|private|protected|static|function|var|let|const|return|package|using)\b"""
    r"""|#include|//|/\*|@\w+|\"\"\"|'''"""
    r"""|['"][\w ]+['"]\s*:"""
    r"""|[\w.\[\]'"]+\s*[-+*/]?=\s*\S"""
    r"""|.*[;{}]$|.*\)\s*:$"""
    r"""|[\w.]+\.\w+\(.*"""
    r"""|```|\$\s|sudo\s|cd\s+[/~.]|(pip|npm|conda|apt|apt-get|brew)\s+install\b|git\s+(clone|commit|push|pull|checkout)\b"""
    r"""|(mkdir|chmod|rm|ls)\s+-?[\w/.~])""")
#: ``# text``: a comment in a script, a heading in a markdown reply. It counts as a code line only
#: when the text has other code lines, so a chat model's heading over prose is not "code".
_HASH_LINE = re.compile(r"^#+\s")
#: A run of one short unit (1-4 non-space characters) repeated 4+ times and 8+ characters long:
#: ``1111…``, ``24-24-24-…``, ``yayayaya…``, ``,,,,,,``. Such a run is one "word", so the word-level
#: loop checks never see it.
_CHAR_LOOP = re.compile(r"(\S{1,4}?)\1{3,}")
#: Absolute fluency limits: below/above these a continuation is degenerate whatever the clean one did.
MIN_LOGP, MIN_DISTINCT2, MAX_REPEAT, MAX_NONALPHA, MAX_CODE, MAX_CHARLOOP = -6.0, 0.5, 0.4, 0.5, 0.5, 0.3
#: Code lines that flag a continuation whatever its share of lines (a short command inside prose).
MAX_CODE_LINES = 1
#: Relative limits: how much worse than the unsteered continuation of the same prompt is too much.
MAX_LOGP_DROP, MAX_DISTINCT2_DROP, MAX_REPEAT_RISE, MAX_NONALPHA_RISE, MAX_CHARLOOP_RISE = 2.5, 0.3, 0.3, 0.3, 0.3


def text_stats(text: str) -> dict[str, float]:
    """Degeneracy signals of a continuation, over its whitespace-separated words.

    ``distinct2``: distinct word bigrams / bigrams (1 = no bigram repeats; loops drive it to 0);
    ``repeat``: length of the longest word n-gram (n >= 2) that occurs at least twice, overlaps
    allowed, over the number of words (a loop of period p over n words scores (n - p) / n);
    ``nonalpha``: share of words without a letter (symbol or digit salad such as ``!! ## ;;``);
    ``code``: share of non-empty lines that read as source code (a coder model asked to continue
    an event description may switch to Python or Java: fluent under the model, but no longer a
    text whose emotion can be read out), and ``code_lines`` their number -- markdown code fences
    and the lines between them count, as do shell commands (``cd /home/user``); a ``# text`` line
    counts only beside other code lines (else it is a markdown heading);
    ``charloop``: share of non-space characters inside a run of one short unit repeated (see
    :data:`_CHAR_LOOP`) -- ``11111111…`` has no spaces, so it is a single word and the word-level
    signals above score it as fluent;
    ``words``: the number of words. An empty text scores 0 words and neutral signals.
    """
    words = _WORD.findall(text.lower())
    n = len(words)
    bigrams = list(zip(words, words[1:], strict=False))
    distinct2 = len(set(bigrams)) / len(bigrams) if bigrams else 1.0
    longest = 0
    for size in range(2, n):  # the longest n-gram seen twice; a longer one implies every shorter one
        grams = [tuple(words[i:i + size]) for i in range(n - size + 1)]
        if len(set(grams)) == len(grams):
            break
        longest = size
    nonalpha = sum(not any(ch.isalpha() for ch in w) for w in words) / n if n else 0.0
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    code_lines, hashed, fenced = 0, 0, False
    for line in lines:
        fence = line.startswith("```")
        code = bool(fence or fenced or _CODE_LINE.match(line))
        code_lines += code
        hashed += not code and bool(_HASH_LINE.match(line))
        fenced ^= fence
    code_lines += hashed if code_lines else 0
    chars = sum(not ch.isspace() for ch in text)
    looped = sum(len(m.group(0)) for m in _CHAR_LOOP.finditer(text) if len(m.group(0)) >= 8)
    return {"words": float(n), "distinct2": distinct2, "repeat": longest / n if n else 0.0, "nonalpha": nonalpha,
            "code": code_lines / len(lines) if lines else 0.0, "code_lines": float(code_lines),
            "charloop": looped / chars if chars else 0.0}


def fluency_flags(text: str, mean_logp: float, clean: tuple[str, float] | None = None) -> list[str]:
    """Why a continuation looks degenerate (empty list: it does not).

    Absolute checks: empty, mean log-probability under the unsteered model below
    :data:`MIN_LOGP`, distinct-2 below :data:`MIN_DISTINCT2` or ``repeat`` above
    :data:`MAX_REPEAT` (8+ words), non-alphabetic words above :data:`MAX_NONALPHA` (4+ words),
    source-code lines above :data:`MAX_CODE` of the lines or more than :data:`MAX_CODE_LINES` of
    them (``code``; code is never a valid continuation of an event description or a reply, so
    this one holds even when the clean continuation is code too; the count catches a command
    block inside prose, which the share alone let through), non-space characters in
    one-unit runs above :data:`MAX_CHARLOOP` (``charloop``: ``1111…``, ``yayaya…``).
    Relative checks against ``clean = (text, mean_logp)``, the unsteered continuation of the same
    prompt: log-probability more than :data:`MAX_LOGP_DROP` nats lower, distinct-2 more than
    :data:`MAX_DISTINCT2_DROP` lower, ``repeat``, ``nonalpha`` or ``charloop`` more than 0.3 higher -- so a
    prompt whose clean continuation is already odd (a list, code) is judged against itself.
    """
    s = text_stats(text)
    if s["words"] == 0:
        return ["empty"]
    flags = []
    if not np.isfinite(mean_logp) or mean_logp < MIN_LOGP:
        flags.append("logp")
    if s["words"] >= 8 and s["distinct2"] < MIN_DISTINCT2:
        flags.append("distinct2")
    if s["words"] >= 8 and s["repeat"] > MAX_REPEAT:
        flags.append("repeat")
    if s["words"] >= 4 and s["nonalpha"] > MAX_NONALPHA:
        flags.append("nonalpha")
    if s["code"] > MAX_CODE or s["code_lines"] > MAX_CODE_LINES:
        flags.append("code")
    if s["charloop"] > MAX_CHARLOOP:
        flags.append("charloop")
    if clean is not None:
        c = text_stats(clean[0])
        if np.isfinite(clean[1]) and np.isfinite(mean_logp) and mean_logp < clean[1] - MAX_LOGP_DROP:
            flags.append("logp_vs_clean")
        if s["words"] >= 4 and s["distinct2"] < c["distinct2"] - MAX_DISTINCT2_DROP:
            flags.append("distinct2_vs_clean")
        if s["words"] >= 4 and s["repeat"] > c["repeat"] + MAX_REPEAT_RISE:
            flags.append("repeat_vs_clean")
        if s["words"] >= 4 and s["nonalpha"] > c["nonalpha"] + MAX_NONALPHA_RISE:
            flags.append("nonalpha_vs_clean")
        if s["charloop"] > c["charloop"] + MAX_CHARLOOP_RISE:
            flags.append("charloop_vs_clean")
    return flags


def degenerate(text: str, mean_logp: float, clean: tuple[str, float] | None = None) -> bool:
    """Whether :func:`fluency_flags` flags the continuation (see there)."""
    return bool(fluency_flags(text, mean_logp, clean))


def steered_generations(lm, dataset, conditions: Sequence[Condition], n_items: int = 3,
                        spec: PromptSpec | None = None, max_new_tokens: int = 24,
                        clean_label: Callable | None = None) -> list[dict]:
    """Continuations of ``n_items`` event descriptions, clean and under each condition, with readout.

    The emotion of text + continuation is read by the model's own label scoring on the T1
    prompt (unsteered). Fluency: ``mean_logp`` (under the unsteered model) and the
    :func:`text_stats` signals; ``guard_flags``/``degenerate`` are :func:`fluency_flags`' verdict,
    each steered continuation judged also against the clean continuation of the same item.
    """
    spec = spec or PromptSpec()
    texts = list(dataset.texts[:n_items])
    ids = list(dataset.ids[:n_items])
    same = len({(tuple(c.layers), c.position) for c in conditions}) == 1
    stacked = generate_stacked(lm, texts, list(conditions[0].layers), [None, *(c.vector for c in conditions)],
                               conditions[0].position, max_new_tokens) if conditions and same else None
    if stacked is not None:  # one batched generate for the clean text and every condition
        clean = stacked[0]
        settings: list[tuple[Condition | None, list[str]]] = [(None, clean), *zip(conditions, stacked[1:], strict=True)]
    else:
        clean = generate_steered(lm, texts, max_new_tokens=max_new_tokens)
        settings = [(None, clean)]
        for c in conditions:
            settings.append((c, generate_steered(lm, texts, list(c.layers), c.vector, c.position, max_new_tokens)))
    # every setting's readout in one pass (the template's shared tokens once), and every continuation's
    # fluency on one run of its item's text (clean and steered replies share it)
    prompts = build_prompts([f"{t} {x.strip()}".strip() for _, conts in settings
                             for t, x in zip(texts, conts, strict=True)], spec, lm.tokenizer)
    reader = LabelScorer.build(lm.tokenizer, spec.labels, prompts[0].text, prompts[0].label_prefix)
    all_scores = score_prompts(lm, prompts, reader, batch_size=8)[0].astype(np.float64)
    all_fluency = continuation_logprob(lm, texts * len(settings), [x for _, conts in settings for x in conts])
    records = []
    clean_fluency = all_fluency[:len(texts)]
    for k, (c, conts) in enumerate(settings):
        scores = all_scores[k * len(texts):(k + 1) * len(texts)]
        fluency = all_fluency[k * len(texts):(k + 1) * len(texts)]
        for i in range(len(texts)):
            probs = np.exp(scores[i] - np.logaddexp.reduce(scores[i]))
            versus = None if c is None else (clean[i], float(clean_fluency[i]))
            flags = fluency_flags(conts[i], float(fluency[i]), versus)
            stats = text_stats(conts[i])
            records.append({
                "id": ids[i], "text": texts[i], "direction": c.direction if c else "clean",
                "kind": c.kind if c else "clean", "window": c.window if c else None,
                "layers": layers_text(c.layers) if c else None, "beta": c.beta if c else 0.0,
                "position": c.position if c else None, "continuation": conts[i],
                "emotion": spec.labels[int(scores[i].argmax())],
                "probs": {lab: round(float(p), 4) for lab, p in zip(spec.labels, probs, strict=True)},
                "mean_logp": None if not np.isfinite(fluency[i]) else round(float(fluency[i]), 4),
                **{k: round(stats[k], 4) for k in ("distinct2", "repeat", "nonalpha", "code")},
                "guard_flags": flags, "degenerate": bool(flags),
            })
    return records


# ----------------------------------------------------------------------------------------------
# which setting the steered generations use


def generation_setting(align: pd.DataFrame, conditions: Sequence, centres: Sequence[int], choice: str | int = "best",
                       position: str = "last") -> tuple[int, float]:
    """(window, β) of steered generations: ``best`` -- those of the headline alignment at ``position``
    (the best setting, or the one the selected design chose; the middle window and largest β
    when nothing was aligned), ``middle`` -- the
    middle window with its largest β, or a centre layer (its largest β)."""
    if choice == "best" and align is not None and len(align):
        head = align[(align.metric == "best_alignment") & (align.position == position)].dropna(subset=["value"])
        if not len(head):  # one setting searched (no best_* row): the highest alignment
            head = align[(align.metric == "alignment") & (align.position == position)].dropna(subset=["value"])
        if len(head):
            best = head.sort_values("value", ascending=False).iloc[0]
            return int(best.window), float(best.beta)
    window = centres[len(centres) // 2] if choice in ("best", "middle") else int(choice)
    if window not in centres:
        raise EmolensError(f"generation window {window} is not one of the swept windows {list(centres)}",
                           "pick a swept centre, best or middle")
    return window, max(c.beta for c in conditions if c.window == window)


def generation_conditions(conditions: Sequence, window: int, beta: float, position: str, steer_at: str) -> list:
    """The conditions steered generations continue under, at one (window, β, sweep position): every
    real direction and specificity control plus one random direction, each re-targeted to steer
    ``steer_at`` (``generated``: the last prompt token and every generated token; ``last``; ``prompt``)."""
    from dataclasses import replace

    at = [c for c in conditions if c.beta == beta and c.window == window and c.position == position]
    chosen = [c for c in at if c.kind in ("real", "specificity")] + [c for c in at if c.kind == "random"][:1]
    return [replace(c, position=steer_at) for c in chosen]
