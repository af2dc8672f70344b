"""The fluency guard: its log-probability pass and its text checks on crafted texts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emolens.model.loading import load_model
from emolens.steering.generation import continuation_logprob

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# the first prompt recurs (clean and steered replies to one message share it): the shared-prompt path
PROMPTS = ["I lost my job today and", "My sister did not call me back", "x",
           "The doctor said the scan was clear, so we went out for dinner and",
           "I lost my job today and", "I lost my job today and"]
REPLIES = [" I do not know what to do now.", " again", " and then we talked for hours about it", "",
           " cried", " called my mother, who told me it would be fine in the end"]


def _one_at_a_time(lm, prompts, replies):
    """The definition: one forward per (prompt, reply), no padding."""
    out = []
    for p, c in zip(prompts, replies, strict=True):
        p_ids = lm.tokenizer(p, return_tensors="pt")["input_ids"]
        c_ids = lm.tokenizer(c, add_special_tokens=False, return_tensors="pt")["input_ids"]
        if c_ids.shape[1] == 0:
            out.append(np.nan)
            continue
        logits = lm.model(input_ids=torch.cat([p_ids, c_ids], 1)).logits[0, p_ids.shape[1] - 1:-1]
        out.append(float(torch.log_softmax(logits.float(), -1).gather(-1, c_ids[0][:, None]).mean()))
    return np.array(out)


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "qwen2"])
def test_batched_continuation_logprob_equals_one_at_a_time(family, monkeypatch):
    from emolens.steering import generation

    lm = load_model(f"tiny:{family}")
    shared = []
    real = generation._shared_prompt_logprob
    monkeypatch.setattr(generation, "_shared_prompt_logprob", lambda *a: shared.append(real(*a)) or shared[-1])
    want = _one_at_a_time(lm, PROMPTS, REPLIES)
    for batch_size in (1, 3, 16):  # uneven lengths: right padding inside every batch
        got = continuation_logprob(lm, PROMPTS, REPLIES, batch_size=batch_size)
        assert np.isnan(got[3]) and np.isnan(want[3])  # an empty reply scores NaN
        keep = [0, 1, 2, 4, 5]
        np.testing.assert_allclose(got[keep], want[keep], atol=1e-5)
    assert shared == [True] * 3  # the repeated prompt took the shared path once per batch size


FLUENT = "I am so sorry you are going through this. It is not your fault, and you do not have to face it alone."


@pytest.mark.parametrize("text, flags", [
    # one run of a single character: one "word", so the word-level loop checks saw a fluent text
    ("11111111111111111111111111111111", ["charloop"]),
    ("I'm not a 24-24-24-24-24-24-24-24-2", ["charloop"]),
    (' "yeyayayayayayayayayayayayayayayayayayayayayayayayayayaya', ["charloop"]),
    ("No way.\n\nI've been doing it for 20000000000000000000", ["charloop"]),
    # a command block inside prose: 2 of 5 lines are code, under the half that the share needs
    ("To walk into work on Monday, you can use the following command:\n\n```\ncd /home/user\n```\n\n"
     "This command changes the current directory to the specified", ["code"]),
    ("Here is how to feel better.\nimport os\nos.system('clear')\nThen take a deep breath and rest.", ["code"]),
    # stays fluent: a short run, a single code-looking line, ordinary prose and punctuation
    ("Haha, that sounds so hard... I've been there for 1000000 reasons.", []),
    ("Try this (step by step):\nTalk to someone you trust, then write down what happened.", []),
    (FLUENT, []),
])
def test_guard_catches_character_loops_and_code_inside_prose(text, flags):
    from emolens.steering.generation import fluency_flags

    assert fluency_flags(text, -2.0) == flags


def test_character_loop_is_judged_against_the_clean_reply():
    from emolens.steering.generation import fluency_flags, text_stats

    assert text_stats("11111111111111111111111111111111")["charloop"] == 1.0
    assert text_stats(FLUENT)["charloop"] == 0.0
    # a short reply that is mostly one run: flagged alone, and as a rise over a clean reply without one
    text = "Sure!!!!!!!!!! ok"
    assert text_stats(text)["charloop"] == pytest.approx(10 / 16)  # 10 of the 16 non-space characters
    assert fluency_flags(text, -2.0, (FLUENT, -2.0)) == ["charloop", "charloop_vs_clean"]


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "qwen2"])
def test_shared_prefix_generation_equals_one_generate_per_setting(family, monkeypatch):
    """Clean and steered replies generated on one shared prompt prefix equal separate ``generate`` calls."""
    from emolens.steering import generation
    from emolens.steering.generation import generate_conditions, generate_steered

    lm = load_model(f"tiny:{family}")
    made = []
    real = generation._prompt_prefix
    monkeypatch.setattr(generation, "_prompt_prefix", lambda *a: made.append(real(*a)) or made[-1])
    texts = ["I lost my job today and I do not know what to tell my family", "My sister did not call",
             "The scan was clear", "We argued again last night about money and the kids"]
    torch.manual_seed(0)
    layers = [0, 1]
    strong = torch.randn(2, lm.model.config.hidden_size) * 4
    settings = [None, (layers, strong), (layers, strong * 0)]
    got = generate_conditions(lm, texts, settings, "generated", max_new_tokens=8, batch_size=3)
    want = [generate_steered(lm, texts, *(s or (None, None)), "generated", 8, 3) for s in settings]
    assert got == want
    assert got[1] != got[0] and got[2] == got[0]  # the hook is live, and a zero vector changes nothing
    assert len(made) == 2 and all(c is not None for c in made)  # both batches took the shared prefix
