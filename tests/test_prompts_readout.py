"""Prompt building with spans, left-padded batching parity, and label readout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emolens.data.corpus import EmotionDataset
from emolens.errors import EmolensError
from emolens.inputs.batching import encode, iter_batches
from emolens.inputs.prompts import INSTRUCTIONS, PAPER_PROMPT_VARIANTS, PromptSpec, build_prompts, parse_shots
from emolens.labels import EMOTIONS
from emolens.model.loading import load_model
from emolens.model.tiny import TINY_FAMILIES
from emolens.readout import LabelReader, calibrate_scores, readout, score_prompts

TEXTS = ["I saw mouldy food in the fridge.", "My first child was born.", "My dog died last week and I cried.",
         "I was confronted by a thief on the way home from work late at night.", "I gave my wallet to a friend."]


def test_default_prompt_is_the_papers_t1_two_shot():
    prompt = PromptSpec().build("I lost my keys.")
    assert prompt.text == (
        "What are the inferred emotions in the following contexts? Context: My first child was born. "
        "Answer: joy Context: My dog died last week. Answer: sadness Context: I lost my keys. Answer:")
    assert prompt.text[slice(*prompt.spans["context"][0])] == "I lost my keys."
    assert prompt.text[slice(*prompt.spans["answer"][0])] == "Answer:"
    assert len(prompt.spans["shots"]) == 2
    assert prompt.text[slice(*prompt.spans["instruction"][0])] == INSTRUCTIONS["T1"]


def test_t3_starts_with_context_and_first_word_task():
    assert PromptSpec(template="T3").build("x").text.startswith(" Context: My first child")
    fw = PromptSpec(task="first-word").build("Someone ate my lunch.")
    assert fw.text.startswith("What is the first word") and "Answer: My Context:" in fw.text


def test_t2_lists_exactly_the_labels_that_are_scored():
    """T2 names the emotions to choose from: the paper's sentence for its 13, else the spec's labels."""
    paper = PromptSpec(template="T2").build("a text").text
    assert paper.startswith(INSTRUCTIONS["T2"])
    own = PromptSpec(template="T2", labels=("joy", "anger", "calm")).build("a text").text
    assert own.startswith("Consider this list of emotions: joy, anger, calm. What are the inferred emotions")
    assert "boredom" not in own.split("?")[0] and "neutral" not in own.split("?")[0]


def test_custom_template_and_variants():
    prompt = PromptSpec(template="Text: {text}\nEmotion:").build("I won.")
    assert prompt.text == "Text: I won.\nEmotion:"
    assert prompt.text[slice(*prompt.spans["context"][0])] == "I won."
    assert len(PAPER_PROMPT_VARIANTS) == 9
    for _, template, shots in PAPER_PROMPT_VARIANTS:
        assert "Answer:" in PromptSpec(template=template, shots=shots).build("x").text


def test_bad_prompt_specs():
    with pytest.raises(EmolensError, match="unknown template"):
        PromptSpec(template="T9")
    with pytest.raises(EmolensError, match="unknown shot"):
        PromptSpec(shots=("ecstasy",))
    assert parse_shots("none") == () and parse_shots("joy, fear") == ("joy", "fear")
    with pytest.raises(EmolensError, match="chat template"):
        PromptSpec(chat=True).build("x", tokenizer=None)


def test_span_masks_cover_the_right_tokens(tiny_tok):
    prompts = build_prompts(TEXTS[:2])
    batch = encode(tiny_tok, prompts)
    for row, prompt in enumerate(prompts):
        ids = batch.input_ids[row][batch.span_masks["context"][row]]
        assert tiny_tok.decode(ids).strip() == prompt.text[slice(*prompt.spans["context"][0])]
        assert tiny_tok.decode(batch.input_ids[row][batch.span_masks["answer"][row]]).strip() == "Answer:"
    # Left padding: the answer cue is always the last column.
    assert batch.span_masks["answer"][:, -1].all()
    assert (batch.position_ids[batch.attention_mask.bool()] >= 0).all()


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_batched_left_padded_equals_one_at_a_time(family):
    lm = load_model(f"tiny:{family}", validate=False)
    prompts = build_prompts(TEXTS)
    reader = LabelReader.build(lm.tokenizer, EMOTIONS, prompts[0].text)
    batched, _ = score_prompts(lm, prompts, reader, batch_size=5)
    single = np.concatenate([score_prompts(lm, [p], reader, batch_size=1)[0] for p in prompts])
    assert np.abs(batched - single).max() < 1e-4
    assert (batched.argmax(1) == single.argmax(1)).all()


def test_iter_batches_covers_every_prompt_once(tiny_tok):
    prompts = build_prompts(TEXTS * 3)
    seen = np.concatenate([b.indices for b in iter_batches(tiny_tok, prompts, 4)])
    assert sorted(seen.tolist()) == list(range(15))
    with pytest.raises(EmolensError, match="batch size"):
        next(iter_batches(tiny_tok, prompts, 0))


def test_multi_token_labels_use_full_sequence_logprob():
    lm = load_model("tiny:llama", validate=False)
    labels = ("joyfulness", "sadnessy", "xqzv")
    prompts = build_prompts(TEXTS[:2], PromptSpec(labels=labels))
    reader = LabelReader.build(lm.tokenizer, labels, prompts[0].text)
    assert not reader.single_token and "split" in reader.describe()
    scores, _ = score_prompts(lm, prompts, reader, batch_size=2)
    # Recompute log p(label | prompt) for one label token by token, by hand.
    ids = reader.token_ids[2]
    full = lm.tokenizer(prompts[0].text, return_tensors="pt")["input_ids"]
    seq = torch.cat([full, torch.tensor([ids])], dim=1)
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(seq).logits[0].float(), -1)
    expected = sum(logp[full.shape[1] - 1 + i, t].item() for i, t in enumerate(ids))
    assert len(ids) > 1
    assert abs(scores[0, 2] - expected) < 1e-4


def test_readout_on_tiny_model_reports_metrics_and_calibration():
    lm = load_model("tiny:gemma3_text", validate=False)
    ds = EmotionDataset(ids=[str(i) for i in range(5)], texts=TEXTS, labels=["disgust", "joy", "sadness", "fear",
                        "trust"], appraisals=np.zeros((5, 0)), appraisal_names=())
    result = readout(lm, ds, calibrate=True, progress=False)
    frame = result.frame
    assert list(frame["id"]) == ds.ids
    assert (frame["pred"] == [EMOTIONS[i] for i in result.scores().argmax(1)]).all()
    assert result.metrics["raw"]["n"] == 5
    assert set(result.metrics["calibrated"]) >= {"accuracy", "balanced_accuracy", "macro_f1"}
    prior = result.calibration
    assert prior.shape == (13,) and abs(prior.sum() - 1) < 1e-5
    cal = calibrate_scores(result.scores(), prior)
    assert (frame["pred_cal"] == [EMOTIONS[i] for i in cal.argmax(1)]).all()


def test_calibration_removes_a_constant_label_bias():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(50, 13))
    bias = np.zeros(13)
    bias[0] = 8.0  # the model loves label 0
    prior = np.exp(bias) / np.exp(bias).sum()
    fixed = calibrate_scores(true + bias, prior)
    assert (fixed.argmax(1) == true.argmax(1)).all()
    assert ((true + bias).argmax(1) == 0).mean() > 0.9


@pytest.mark.real_model
def test_real_model_batched_equals_single_and_labels_are_single_tokens(real_model):
    prompts = build_prompts(TEXTS[:3])
    reader = LabelReader.build(real_model.tokenizer, EMOTIONS, prompts[0].text)
    assert reader.single_token
    batched, top = score_prompts(real_model, prompts, reader, batch_size=3)
    single = np.concatenate([score_prompts(real_model, [p], reader, batch_size=1)[0] for p in prompts])
    assert np.abs(batched - single).max() < 1e-3
    assert (batched.argmax(1) == single.argmax(1)).all()
    # The format is understood: most of the next-token mass is on the 13 labels.
    assert np.exp(batched).sum(1).min() > 0.2
