#!/usr/bin/env python3
"""A random Qwen3-MoE checkpoint big enough that a CPU decode step takes milliseconds, for benchmarks
whose results are a share of step time (bench/serve_overhead.py). Not a fixture: written to OUT_DIR,
never committed. It gets the tiny models' real tokenizer and chat template (vocab 320), so the
coordinator serves it like any model.

    /tmp/refenv/bin/python tools/reference/make_bench_model.py /tmp/bench-qwen3-moe
"""
import json
import os
import shutil
import sys

import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    cfg = Qwen3MoeConfig(vocab_size=320, hidden_size=1024, intermediate_size=2048, moe_intermediate_size=512,
                         num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=4, head_dim=64,
                         num_experts=32, num_experts_per_tok=4, decoder_sparse_step=1, norm_topk_prob=True,
                         max_position_embeddings=2048, rope_theta=1e6, tie_word_embeddings=False)
    cfg.torch_dtype = torch.bfloat16
    model = Qwen3MoeForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    src = os.path.join(ROOT, "tests", "fixtures", "qwen3-moe-f32")
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(src, f), os.path.join(out, f))
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"out": out, "parameters": n}))


if __name__ == "__main__":
    main()
