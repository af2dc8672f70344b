"""Steered generations of qwen2.5-coder-0.5b-instruct at layers 17-19, steering every generated token.

Reads the directions that a prior `emolens steer ... --out /tmp/qwen/steer` run saved and prints one
JSON line per (condition, text): the continuation and its fluency (mean log-probability under the
unsteered model).
"""

import json

from emolens.data.corpus import load_crowd_envent
from emolens.inputs.prompts import build_prompts
from emolens.model.loading import load_model
from emolens.steering.apply import mean_resid_norm, scaled
from emolens.steering.directions import bank_from_file, combine, parse_direction
from emolens.steering.generation import continuation_logprob, generate_steered

TEXTS = ["I forgot my best friend's birthday.", "My flight was cancelled at the last minute.",
         "I passed my driving test."]
LAYERS = [17, 18, 19]
DIRECTIONS = ["pleasantness+", "self_responsblt+", "other_responsblt+", "pleasantness-"]


def main() -> None:
    lm = load_model("qwen2.5-coder-0.5b-instruct")
    bank = bank_from_file("/tmp/qwen/steer/directions.safetensors", "diffmean")
    reference = load_crowd_envent("../shared/data/crowd-enVENT/enVent_gen_Data.csv").sample(52, seed=0)
    ref_norm = mean_resid_norm(lm, build_prompts(reference.texts[:16]), LAYERS, position="generated")
    out = {"clean": generate_steered(lm, TEXTS, max_new_tokens=24)}
    for direction in DIRECTIONS:
        unit = combine(bank, parse_direction(direction, bank.names), LAYERS)
        vector = scaled(unit, 0.1, "relative", ref_norm)
        out[f"{direction} beta=0.1"] = generate_steered(lm, TEXTS, LAYERS, vector, "generated", 24)
    for condition, continuations in out.items():
        fluency = continuation_logprob(lm, TEXTS, continuations).round(2).tolist()
        for text, cont, logp in zip(TEXTS, continuations, fluency, strict=True):
            print(json.dumps({"condition": condition, "text": text, "continuation": cont, "mean_logp": logp}))


if __name__ == "__main__":
    main()
