#!/usr/bin/env python3
"""transformers' answers from the demo model: the oracle for shoal's check that it computes the same
model (tests/unit/demo_model_test.cc, tests/e2e/demo_test.py). For a few chat conversations and
plain prompts: the prompt ids (chat template + tokenizer) and the greedy continuation in f32.

    python tools/demo-model/reference.py models/demo-kjv-moe
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

CHATS = [
    [{"role": "user", "content": "What is wisdom?"}],
    [{"role": "user", "content": "Tell me about the sea."}],
    [{"role": "system", "content": "You are a psalmist."}, {"role": "user", "content": "Sing of the morning."}],
]
PROMPTS = ["In the beginning", "And the LORD said unto Moses,", "Blessed are"]
MAX_NEW = 40


def main():
    d = sys.argv[1]
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    eos = model.generation_config.eos_token_id
    cases = []

    def greedy(ids):
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=eos, pad_token_id=eos[0])
        return out[0, len(ids):].tolist()

    for msgs in CHATS:
        ids = list(tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True))
        g = greedy(ids)
        cases.append({"messages": msgs, "prompt_ids": ids, "greedy_ids": g,
                      "text": tok.decode(g, skip_special_tokens=True)})
    for p in PROMPTS:
        ids = tok(p)["input_ids"]
        g = greedy(ids)
        cases.append({"prompt": p, "prompt_ids": ids, "greedy_ids": g, "text": tok.decode(g, skip_special_tokens=True)})
    import transformers
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump({"generator": "tools/demo-model/reference.py", "transformers": transformers.__version__,
                   "compute": "float32", "eos_token_ids": eos, "max_new_tokens": MAX_NEW, "cases": cases},
                  f, indent=1, ensure_ascii=False)
        f.write("\n")
    for c in cases:
        print(repr(c.get("prompt") or c["messages"][-1]["content"]), "->", repr(c["text"]))


if __name__ == "__main__":
    main()
