"""Tiny random-initialised models of every supported family, with a tokenizer built in code.

They need no download and run a forward in milliseconds, so site resolution, padding parity,
hook identities and readout logic can be tested for each family on any CPU. Users can build them
too, to try an analysis before pointing it at a real model.
"""

from __future__ import annotations

import functools

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from emolens.labels import EMOTIONS, FIRST_WORDS

_CORPUS = [
    "What are the inferred emotions in the following contexts? Context: My first child was born. Answer: joy",
    "Context: My dog died last week. Answer: sadness Context: I was confronted by a thief. Answer: fear",
    "Consider this list of emotions: " + ", ".join(EMOTIONS) + ".",
    "Guess the emotion. Decipher the label for the following statements: What is the first word?",
    "I saw mouldy food. I failed a maths test and the teacher called me out in front of the class.",
    "My husband missed an important call, because his phone was on silent AGAIN! I gave my wallet to a friend.",
    "I found out my mam didn't need a serious surgery. I was recognised for doing well at work.",
    "At work, my job is far to mind numbing and it does not challenge me. I saw my teacher on an aeroplane!",
    "I booked a night away with friends and my children were upset. I walked to the village near my home.",
    " ".join(FIRST_WORDS) + " someone we the a when",
] + [f"Answer: {e} Context: {e} {e}." for e in EMOTIONS]

TINY_FAMILIES: tuple[str, ...] = (
    "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "olmo", "olmo2", "gpt2", "gpt_neox",
)


@functools.cache
def tiny_tokenizer(vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few protocol sentences; adds ``<bos>``, left-pads.

    Emotion words with a leading space come out as single tokens for most labels, like the large
    vocabularies of real models, and some split, which exercises the multi-token readout path.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_CORPUS * 3, trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bpe.token_to_id("<bos>"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    tok.padding_side = "left"
    return tok


def tiny_config(family: str, vocab_size: int, n_layers: int = 3, hidden: int = 64):
    """A small config of ``family`` with ids set so they fall inside a small vocabulary."""
    from transformers import AutoConfig

    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    if family == "gpt2":
        return AutoConfig.for_model("gpt2", vocab_size=vocab_size, n_embd=hidden, n_layer=n_layers, n_head=4,
                                    n_positions=512, **ids)
    if family == "gpt_neox":
        return AutoConfig.for_model("gpt_neox", vocab_size=vocab_size, hidden_size=hidden,
                                    num_hidden_layers=n_layers, num_attention_heads=4,
                                    intermediate_size=2 * hidden, max_position_embeddings=512, **ids)
    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                  num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=512, **ids)
    if family in ("gemma2", "gemma3_text"):
        common.update(head_dim=16, sliding_window=64)
    if family == "qwen3":
        common.update(head_dim=16)
    return AutoConfig.for_model(family, **common)


def tiny_model(family: str = "llama", n_layers: int = 3, hidden: int = 64, seed: int = 0,
               attn_implementation: str | None = None):
    """A random-initialised causal LM of ``family`` sized for tests (float32, eval mode)."""
    tok = tiny_tokenizer()
    config = tiny_config(family, len(tok), n_layers=n_layers, hidden=hidden)
    torch.manual_seed(seed)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, **kwargs)
    return model.eval()
