#!/usr/bin/env python3
"""Gives the tiny model fixtures a real tokenizer and chat template, and records what transformers
makes of a few chat conversations with them (the e2e tests' oracle for prompt tokens).

Llama 4 fixtures (vocab 320) get the byte-level BPE with Llama 4's split pattern and specials from
tests/fixtures/tokenizers/llama4-style and the Llama-4-style template; Qwen fixtures (vocab 320) get the byte-level BPE from tests/fixtures/tokenizers/qwen-bytelevel and the
Qwen-style ChatML template; Mixtral fixtures (vocab 320, <s>=1, </s>=2) get the SentencePiece-style
byte-fallback BPE and the Mistral-style [INST] template. Run after make_tokenizer_fixtures.py and
make_chat_template_fixtures.py:

    /tmp/refenv/bin/python tools/reference/attach_tokenizers.py              (transformers 4)
    /tmp/refenv5/bin/python tools/reference/attach_tokenizers.py mixtral-top1-f32-tf5 qwen2-moe-f16-tf5 qwen3-moe-bf16-tf5 \
        llama4-scout-bf16 llama4-maverick-f32
"""
import json
import os
import shutil
import sys

from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures")

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Héllo 👋 — say something"}],
    [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4."},
     {"role": "user", "content": "And  with   spaces\tand\nnewlines?"}],
]


def attach(model, tokenizer, template_name):
    src = os.path.join(FIX, "tokenizers", tokenizer)
    dst = os.path.join(FIX, model)
    shutil.copy(os.path.join(src, "tokenizer.json"), os.path.join(dst, "tokenizer.json"))
    cfg = json.load(open(os.path.join(src, "tokenizer_config.json")))
    templates = json.load(open(os.path.join(FIX, "chat_templates", "cases.json")))["templates"]
    cfg["chat_template"] = templates[template_name]
    with open(os.path.join(dst, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")
    tok = AutoTokenizer.from_pretrained(dst)
    cases = []
    for msgs in CONVERSATIONS:
        if template_name == "mistral-style" and msgs[0]["role"] == "system":
            pass  # the Mistral-style template folds the system prompt into the first user turn
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)
        if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding, 4 a list of ids
            ids = ids["input_ids"]
        cases.append({"messages": msgs, "text": text, "prompt_ids": list(ids)})
    completions = []
    for p in ["Hello world", "  leading spaces, émojis 🎉 and digits 12345", "<|im_start|>user"]:
        completions.append({"prompt": p, "prompt_ids": tok(p)["input_ids"]})
    import tokenizers
    import transformers
    with open(os.path.join(dst, "chat_expected.json"), "w") as f:
        json.dump({"generator": "tools/reference/attach_tokenizers.py",
                   "versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
                   "tokenizer": tokenizer, "template": template_name, "chats": cases, "completions": completions},
                  f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(model, "<-", tokenizer, "+", template_name)


def main():
    # Fixture names as arguments (default: the transformers-4 set); a -tf5 fixture gets its base's
    # tokenizer, and its chat_expected.json from the transformers that runs this (5 for -tf5).
    names = sys.argv[1:] or ["qwen3-moe-f32", "qwen3-moe-bf16", "qwen2-moe-f32", "qwen2-moe-f16",
                             "mixtral-top1-f32", "mixtral-bf16"]
    for m in names:
        if m.startswith("mixtral"):
            attach(m, "spm-bytefallback", "mistral-style")
        elif m.startswith("llama4"):
            attach(m, "llama4-style", "llama4-style")
        elif m.startswith("deepseek"):
            attach(m, "deepseek-style", "deepseek-style")
        else:
            attach(m, "qwen-bytelevel", "qwen-style")


if __name__ == "__main__":
    main()
