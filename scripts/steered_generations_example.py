"""Steered generations of qwen2.5-coder-0.5b-instruct at layers 17-19, steering every generated token.

Reads the directions a prior `emolens steer ... --out /tmp/qwen/steer` run saved; prints JSON lines.
"""
import json
from emolens.model import load_model
from emolens.data import load_crowd_envent
from emolens import steering as st
from emolens.prompts import build_prompts
lm = load_model("qwen2.5-coder-0.5b-instruct")
bank = st.bank_from_file("/tmp/qwen/steer/directions.safetensors", "diffmean")
ds = load_crowd_envent("../shared/data/crowd-enVENT/enVent_gen_Data.csv").sample(52, seed=0)
texts = ["I forgot my best friend's birthday.", "My flight was cancelled at the last minute.", "I passed my driving test."]
layers = [17, 18, 19]
ref = st.mean_resid_norm(lm, build_prompts(ds.texts[:16]), layers, position="generated")
out = {"clean": st.generate_steered(lm, texts, max_new_tokens=24)}
for d in ["pleasantness+", "self_responsblt+", "other_responsblt+", "pleasantness-"]:
    unit = st.combine(bank, st.parse_direction(d, bank.names), layers)
    for beta in (0.1,):
        vec = st.scaled(unit, beta, "relative", ref)
        out[f"{d} beta={beta}"] = st.generate_steered(lm, texts, layers, vec, "generated", 24)
flu = {k: st.continuation_logprob(lm, texts, v).round(2).tolist() for k, v in out.items()}
for k, v in out.items():
    for t, c, f in zip(texts, v, flu[k]):
        print(json.dumps({"condition": k, "text": t, "continuation": c, "mean_logp": f}))
