#!/usr/bin/env python3
"""Trains shoal's embedded demo model: a small Qwen3-MoE (4 layers, 8 experts, top-2) with a byte-level
BPE tokenizer, on the King James Bible (public domain; Debian's bible-kjv-text, see fetch_text.sh), on
CPU in about an hour on 2 cores. Writes a Hugging Face checkpoint any MoE-serving stack can load:
config.json, generation_config.json, model.safetensors (bf16), tokenizer.json, tokenizer_config.json
(with a ChatML chat template), plus the training record: loss.csv, loss.svg and train.json.

The model learns two things from the same text: plain running text (whole chapters), and chat turns
in ChatML where the user's message is a passage and the assistant's reply is the passage that follows
it, ended by <|im_end|>. So `shoal up` + a chat request gets an answer in (Jacobean) English that ends
by itself.

Reproducible: everything is seeded and torch runs deterministic algorithms on a fixed number of
threads, so the same text, the same package versions (the ones recorded in train.json; requirements.txt
only gives ranges) and the same --threads give the same checkpoint, bit for bit.

    bash tools/demo-model/fetch_text.sh /tmp/demo-data/kjv.txt
    python tools/demo-model/train.py --text /tmp/demo-data/kjv.txt --out models/demo-kjv-moe
"""
import argparse
import json
import math
import os
import random
import re
import time

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def parse_chapters(path):
    """[(title, [verse text, ...])] from `bible` output: 'Genesis 1' headings, then '  N text' verses
    wrapped at 80 columns."""
    chapters, verses = [], None
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m:
            verses.append(m.group(2))
        elif verses is not None and line[:1] not in (" ", "") and not re.match(r"^[1-3]?\s?[A-Z][a-z]+.* \d+$", line):
            verses[-1] += " " + line.strip()  # continuation of a wrapped verse
        else:
            verses = []
            chapters.append((line.strip(), verses))
    return [(t, v) for t, v in chapters if v]


def train_tokenizer(texts, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def chat_text(user, assistant):
    return (f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{assistant}<|im_end|>\n")


def build_stream(chapters, tok, rng):
    """One token stream: each chapter as running text, then chat turns cut from it, in a seeded order."""
    docs = []
    for title, verses in chapters:
        docs.append(title + "\n\n" + " ".join(verses) + "<|endoftext|>")
        i = 0
        while i + 1 < len(verses):
            n_user, n_reply = rng.randint(1, 2), rng.randint(1, 3)
            user = " ".join(verses[i:i + n_user])
            reply = " ".join(verses[i + n_user:i + n_user + n_reply])
            if reply:
                docs.append(chat_text(user, reply))
            i += n_user + n_reply
    rng.shuffle(docs)
    ids = []
    for enc in tok.encode_batch(docs):
        ids.extend(enc.ids)
    return torch.tensor(ids, dtype=torch.long)


def svg_curve(points, val_points, path):
    w, h, pad = 640, 360, 48
    xs = [p[0] for p in points] or [1]
    ys = [p[1] for p in points] + [p[1] for p in val_points]
    x_max, y_min, y_max = max(xs), min(ys), max(ys)
    sx = lambda x: pad + (w - 2 * pad) * x / max(1, x_max)
    sy = lambda y: h - pad - (h - 2 * pad) * (y - y_min) / max(1e-9, y_max - y_min)
    line = lambda pts: " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    ticks = "".join(
        f'<text x="{pad - 6}" y="{sy(v):.1f}" text-anchor="end" font-size="11">{v:.1f}</text>'
        for v in [y_min + (y_max - y_min) * k / 4 for k in range(5)])
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">'
                f'<rect width="{w}" height="{h}" fill="white"/>'
                f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">demo model: training loss '
                f'(nats/token)</text>{ticks}'
                f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle" font-size="11">step (of {x_max})</text>'
                f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{line(points)}"/>'
                f'<polyline fill="none" stroke="#d62728" stroke-width="2" points="{line(val_points)}"/>'
                f'<text x="{w - pad}" y="40" text-anchor="end" font-size="11" fill="#1f77b4">train</text>'
                f'<text x="{w - pad}" y="55" text-anchor="end" font-size="11" fill="#d62728">held-out</text>'
                f'</svg>\n')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=1800)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)

    chapters = parse_chapters(args.text)
    order = list(range(len(chapters)))
    rng.shuffle(order)
    held = set(order[:len(order) // 50])  # 2% of chapters never trained on
    train_ch = [c for i, c in enumerate(chapters) if i not in held]
    val_ch = [c for i, c in enumerate(chapters) if i in held]
    tok = train_tokenizer((t + "\n\n" + " ".join(v) for t, v in train_ch), 4096)
    ids = {s: tok.token_to_id(s) for s in SPECIALS}
    train_ids = build_stream(train_ch, tok, rng)
    val_ids = build_stream(val_ch, tok, random.Random(args.seed + 1))
    print(f"{len(chapters)} chapters, {len(train_ids)} train tokens, {len(val_ids)} held-out tokens", flush=True)

    cfg = Qwen3MoeConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=256, intermediate_size=768, moe_intermediate_size=256,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64, num_experts=8,
        num_experts_per_tok=2, decoder_sparse_step=1, norm_topk_prob=True, max_position_embeddings=1024,
        rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, output_router_logits=True,
        router_aux_loss_coef=0.01, bos_token_id=None, eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"])
    model = Qwen3MoeForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params} parameters", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 30)
    lr_at = lambda s: args.lr * min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    gen = torch.Generator().manual_seed(args.seed)

    def batch(stream, g):
        starts = torch.randint(0, len(stream) - args.seq - 1, (args.batch,), generator=g)
        return torch.stack([stream[s:s + args.seq] for s in starts.tolist()])

    @torch.no_grad()
    def held_out_loss():
        model.eval()
        g, losses = torch.Generator().manual_seed(7), []
        for _ in range(8):
            x = batch(val_ids, g)
            losses.append(model(input_ids=x, labels=x, output_router_logits=False).loss.item())
        model.train()
        return sum(losses) / len(losses)

    log, val_log, t0 = [], [], time.time()
    model.train()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        x = batch(train_ids, gen)
        out = model(input_ids=x, labels=x)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lm_loss = (out.loss - cfg.router_aux_loss_coef * out.aux_loss).item()
        log.append((step, lm_loss, out.aux_loss.item()))
        if step % 100 == 0 or step == args.steps - 1:
            v = held_out_loss()
            val_log.append((step, v))
            print(f"step {step:5d}  loss {lm_loss:.3f}  aux {out.aux_loss.item():.3f}  held-out {v:.3f}  "
                  f"{time.time() - t0:.0f}s", flush=True)

    # Save: bf16 weights (half the bytes), router logits off for inference.
    model.config.output_router_logits = False
    model.to(torch.bfloat16).save_pretrained(args.out, safe_serialization=True)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.save_pretrained(args.out)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
                   "pad_token": "<|endoftext|>", "add_bos_token": False, "add_eos_token": False,
                   "model_max_length": cfg.max_position_embeddings, "clean_up_tokenization_spaces": False,
                   "chat_template": CHAT_TEMPLATE}, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, "loss.csv"), "w") as f:
        f.write("step,train_loss,aux_loss,held_out_loss\n")
        val = dict(val_log)
        for s, l, a in log:
            f.write(f"{s},{l:.4f},{a:.4f},{val[s]:.4f}\n" if s in val else f"{s},{l:.4f},{a:.4f},\n")
    smooth = [(s, sum(l for _, l, _ in log[max(0, i - 19):i + 1]) / len(log[max(0, i - 19):i + 1]))
              for i, (s, _, _) in enumerate(log)]
    svg_curve(smooth, val_log, os.path.join(args.out, "loss.svg"))
    import tokenizers
    import transformers
    with open(os.path.join(args.out, "train.json"), "w") as f:
        json.dump({"generator": "tools/demo-model/train.py", "args": vars(args), "parameters": n_params,
                   "train_tokens": len(train_ids), "held_out_tokens": len(val_ids),
                   "final_train_loss": sum(l for _, l, _ in log[-50:]) / len(log[-50:]),
                   "final_held_out_loss": val_log[-1][1], "seconds": round(time.time() - t0),
                   "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                "tokenizers": tokenizers.__version__}}, f, indent=1)
        f.write("\n")
    print("saved", args.out)


if __name__ == "__main__":
    main()
