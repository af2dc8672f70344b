"""The engine's shared pieces: a plain nn.Module works, LabelScorer's two scorings agree, the runner's paths agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emolens.engine.intervention import Intervention
from emolens.engine.ops import Add, Capture, Zero
from emolens.engine.positions import Positions
from emolens.engine.runner import Condition, ConditionRunner, path_name
from emolens.engine.scoring import LabelScorer
from emolens.inputs.batching import iter_batches
from emolens.inputs.prompts import build_prompts
from emolens.labels import EMOTIONS

TEXTS = ["My dog died last week.", "I was recognised for doing well at work by my line manager today.",
         "I saw mouldy food.", "A stranger returned my lost wallet with all the cash still inside it.",
         "I failed the exam."]


@pytest.fixture(scope="module")
def setup(tiny_llama):
    lm = tiny_llama
    prompts = build_prompts(TEXTS, None, lm.tokenizer)
    scorer = LabelScorer.build(lm.tokenizer, EMOTIONS, prompts[0].text, prompts[0].label_prefix)
    batches = list(iter_batches(lm.tokenizer, prompts, 3, lm.device))
    return lm, scorer, batches


def _two_token(scorer: LabelScorer) -> LabelScorer:
    """The same labels with ``anger`` scored as a two-token label (its token, then joy's)."""
    ids = [list(t) for t in scorer.token_ids]
    ids[0] = ids[0] + ids[1]
    return LabelScorer(scorer.labels, ids, single_token=False)


@torch.no_grad()
def test_intervention_and_runner_take_a_plain_module(setup):
    lm, scorer, batches = setup
    batch = batches[0]
    ops = [Capture("resid", layers="all", positions=[-1, -2]), Add("resid", layers=[1], positions=-1,
                                                                   value=torch.ones(lm.sites.d_model))]
    with Intervention(lm, ops) as a:
        want = lm.model(**batch.model_inputs()).logits
    with Intervention(lm.model, ops) as b:  # sites resolved by structure
        got = lm.model(**batch.model_inputs()).logits
    assert torch.equal(got, want) and torch.equal(a.captures["resid"], b.captures["resid"])
    plain, loaded = ConditionRunner(lm.model, scorer), ConditionRunner(lm, scorer)
    torch.testing.assert_close(plain.run(batch, ops[1:])[0], loaded.run(batch, ops[1:])[0], rtol=0, atol=0)


@torch.no_grad()
def test_label_scorer_first_token_and_full_sequence_agree(setup):
    lm, scorer, batches = setup
    batch = batches[1]
    assert scorer.single_token
    last = lm.model(**batch.model_inputs()).logits[:, -1]
    first = scorer.first_token(last)
    want = torch.log_softmax(last.float(), -1)[:, [t[0] for t in scorer.token_ids]]
    torch.testing.assert_close(first, want)
    # single-token labels: the full-sequence scoring (continuing a cache) changes nothing
    as_sequences = LabelScorer(scorer.labels, scorer.token_ids, single_token=False)
    torch.testing.assert_close(as_sequences.score(lm.model, batch, last), scorer.score(lm.model, batch, last))
    # a two-token label continues the prompt's cache: the same as teacher forcing the whole sequence
    multi = _two_token(scorer)
    got = multi.score(lm.model, batch, last)
    ids = torch.tensor(multi.token_ids[0]).expand(len(batch), -1)
    full = lm.model(input_ids=torch.cat([batch.input_ids, ids], 1),
                    attention_mask=torch.cat([batch.attention_mask, torch.ones_like(ids)], 1),
                    position_ids=torch.cat([batch.position_ids, batch.position_ids[:, -1:] + torch.arange(1, 3)], 1)
                    ).logits[:, -3:-1]
    teacher = torch.log_softmax(full.float(), -1).gather(-1, ids[..., None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(got[:, 0], teacher, atol=1e-5, rtol=0)
    torch.testing.assert_close(got[:, 1:], first[:, 1:])


@pytest.mark.parametrize("two_token", [False, True])
def test_runner_suffix_path_equals_full_path_and_counts_work(setup, two_token):
    lm, scorer, batches = setup
    scorer = _two_token(scorer) if two_token else scorer
    runner = ConditionRunner(lm, scorer)
    n = sum(len(b) for b in batches)
    clean = runner.clean(batches, n, ("fast", "fast2", "full"))
    for path in ("fast", "fast2"):
        np.testing.assert_allclose(clean.scores[path], clean.scores["full"], atol=1e-5, rtol=0)
    conds = [Condition(lambda b, p=p: [Zero("attn", layers=[1], positions=p)], Positions.of(p).suffix)
             for p in (-1, [-1, -2])]
    conds += [Condition(c.build, 0) for c in conds]  # the same edits on full forwards
    before = runner.counter.token_layers
    suffix1, suffix2, full1, full2 = runner.conditions(batches, n, conds)
    np.testing.assert_allclose(suffix1, full1, atol=1e-5, rtol=0)
    np.testing.assert_allclose(suffix2, full2, atol=1e-5, rtol=0)
    assert np.abs(suffix1 - clean.scores["fast"]).max() > 1e-4  # the edit acts
    # work: the suffix conditions ran 1 and 2 tokens per row (prefixes were kept), the full ones whole rows.
    # With single-token labels every condition starts at its first edited layer (1): one clean forward per
    # batch and path runs layer 0 only (its output is replayed), the conditions run layers 1..L-1.
    tokens = sum(int(b.input_ids.numel()) for b in batches)
    per_label = sum(len(t) - 1 for t in scorer.token_ids if len(t) > 1)
    L = lm.n_layers
    if two_token:  # the label continuation needs every layer's cache: no skipping
        expected = L * (n * 1 + n * 2 + 2 * tokens + 4 * n * per_label)
    else:
        expected = 1 * (n * 1 + n * 2 + tokens) + (L - 1) * (n * 1 + n * 2 + 2 * tokens)
    assert runner.counter.token_layers - before == expected
    # the two full-path conditions share one stacked forward per batch
    assert [path_name(m) for m in (0, 1, 5)] == ["full", "fast", "fast5"]
