#!/usr/bin/env python3
"""Builds the tokenizer fixtures under tests/fixtures/tokenizers/<name>/ with HF `tokenizers`.

Each fixture is a small BPE tokenizer trained here on a fixed corpus (so the output is deterministic),
written as tokenizer.json (+ tokenizer_config.json), and a cases.json recording what HF `tokenizers`
produces for it: for each text the ids with and without special tokens and the decode of those ids
with and without skip_special_tokens, plus id streams whose one-at-a-time decode must concatenate to
the full decode. tests/unit/tokenizer_test.cc checks shoal::Tokenizer against these.

    /tmp/refenv/bin/python tools/reference/make_tokenizer_fixtures.py [--only NAME]
"""
import argparse
import json
import os
import sys

import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizers")

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Llama 4's pre-tokenizer split (the o200k-style pattern: case-aware words with contractions).
LLAMA4_PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                  r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                  r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
DEEPSEEK_PATTERNS = [
    r"\p{N}{1,3}",
    r"[一-龥぀-ゟ゠-ヿ]+",
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+",
]

CORPUS = """The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away.
Hello world! Hello, world. Hello there, how are you doing today? I'm fine, thanks. Don't worry.
It's a small model, but it's ours. We'll see what they've built. You're right, he'd agree.
def add(a, b):
    return a + b  # simple addition

for i in range(10):
    print(i * 2, "items")
if (x >= 42 && y != 0) { return x / y; }
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 123 2024 3.14159 1,000,000 -7 +8 99%
Prices are $19.99 and €5,00; dates like 2024-01-31 and 12:30:45.
Café, naïve, résumé, façade, Zoë, jalapeño, über, Ångström, crème brûlée.
日本語の文章です。東京は大きい都市です。中文也可以，我们测试一下。
Emoji: 😀 😂 🎉 👍 ❤️ 🚀 and the end.
Mixture of Experts models route each token to a few experts out of many.
The router picks the top k experts; their outputs are weighted and summed.
""" * 3


def byte_level_alphabet():
    return pre_tokenizers.ByteLevel.alphabet()


def train_bytelevel(pre_tokenizer, normalizer, vocab_size, specials):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=byte_level_alphabet(),
                                  special_tokens=[], show_progress=False, min_frequency=1)
    tok.train_from_iterator(CORPUS.splitlines(keepends=True), trainer)
    tok.add_special_tokens(specials)
    return tok


def build_qwen():
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = train_bytelevel(pre, normalizers.NFC(), 317, specials)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    assert tok.get_vocab_size() == 320, tok.get_vocab_size()
    assert [tok.token_to_id(s) for s in specials] == [317, 318, 319]
    config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
              "model_max_length": 32768, "tokenizer_class": "Qwen2Tokenizer"}
    return tok, config, specials


def build_spm():
    # Train SentencePiece-like pieces ("▁word") on the corpus, then lay the vocab out as Mistral's
    # tokenizer.json does: <unk>, <s>, </s>, the 256 byte tokens, then the pieces, 320 ids in all.
    inner = Tokenizer(models.BPE())
    inner.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    inner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    # An explicit alphabet (limit_alphabet breaks frequency ties by hash order, which is not stable);
    # every other character takes the byte-fallback path.
    alphabet = list("▁abcdefghijklmnopqrstuvwxyzTIH.,'0")
    trainer = trainers.BpeTrainer(vocab_size=61, limit_alphabet=len(alphabet), initial_alphabet=alphabet,
                                  special_tokens=[], show_progress=False)
    inner.train_from_iterator(CORPUS.splitlines(), trainer)
    trained = json.loads(inner.to_str())["model"]
    pieces = sorted(trained["vocab"].items(), key=lambda kv: kv[1])
    assert len(pieces) == 61, len(pieces)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = 3 + b
    for piece, _ in pieces:
        vocab[piece] = len(vocab)
    assert len(vocab) == 320
    merges = [" ".join(m) if isinstance(m, list) else m for m in trained["merges"]]  # "a b" string form

    def added(id_, content):
        return {"id": id_, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True}

    spec = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    tok = Tokenizer.from_str(json.dumps(spec))
    assert tok.get_vocab_size() == 320
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
              "add_eos_token": False, "model_max_length": 32768, "tokenizer_class": "LlamaTokenizer"}
    return tok, config, ["<s>", "</s>", "<unk>"]


def build_llama3():
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok = train_bytelevel(pre, None, 560, [])
    spec = json.loads(tok.to_str())
    model = spec["model"]
    model["ignore_merges"] = True
    # Whole words with no merge path to them: only ignore_merges can produce these ids.
    for word in ["ĠShoal", "Experts", "ĠEXPERTS", "Ġ日本"]:
        model["vocab"].setdefault(word, len(model["vocab"]))
    n = len(model["vocab"])
    spec["added_tokens"] = [
        {"id": n, "content": "<|begin_of_text|>", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True},
        {"id": n + 1, "content": "<|end_of_text|>", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True},
        {"id": n + 2, "content": "<tool>", "single_word": False, "lstrip": True, "rstrip": True,
         "normalized": False, "special": False},
        {"id": n + 3, "content": "moe", "single_word": True, "lstrip": False, "rstrip": False,
         "normalized": False, "special": False},
        {"id": n + 4, "content": "<tool_end>", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": True, "special": False},
    ]
    spec["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [n],
                                                  "tokens": ["<|begin_of_text|>"]}}}]}
    tok = Tokenizer.from_str(json.dumps(spec))
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "model_max_length": 131072,
              "tokenizer_class": "PreTrainedTokenizerFast"}
    return tok, config, ["<|begin_of_text|>", "<|end_of_text|>", "<tool>", "moe", "<tool_end>"]


def build_llama4():
    # 320 ids in all, like the tiny Llama 4 model fixtures: 315 byte-level BPE tokens, then the specials
    # a Llama 4 chat needs (bos 315; the model's eos ids are 316 and 319).
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA4_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|header_start|>", "<|header_end|>", "<|eot|>"]
    tok = train_bytelevel(pre, None, 315, specials)
    assert [tok.token_to_id(s) for s in specials] == [315, 316, 317, 318, 319], tok.get_vocab_size()
    spec = json.loads(tok.to_str())
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [315],
                                                 "tokens": ["<|begin_of_text|>"]}}}
    tok = Tokenizer.from_str(json.dumps(spec))
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot|>", "model_max_length": 10485760,
              "tokenizer_class": "PreTrainedTokenizerFast"}
    return tok, config, specials


def build_deepseek():
    # DeepSeek-V3's pre-tokenizer (a Sequence of three Splits before ByteLevel), an NFKD normalizer and a
    # Digits/Split/Contiguous/invert mix, to cover the regex features real models use.
    splits = [pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False) for p in DEEPSEEK_PATTERNS]
    pre = pre_tokenizers.Sequence(splits + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok = train_bytelevel(pre, normalizers.NFKD(), 420, ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<｜begin▁of▁sentence｜> $A", special_tokens=[("<｜begin▁of▁sentence｜>", tok.token_to_id("<｜begin▁of▁sentence｜>"))])
    config = {"bos_token": {"content": "<｜begin▁of▁sentence｜>", "lstrip": False, "normalized": True,
                            "rstrip": False, "single_word": False, "__type": "AddedToken"},
              "eos_token": {"content": "<｜end▁of▁sentence｜>", "lstrip": False, "normalized": True,
                            "rstrip": False, "single_word": False, "__type": "AddedToken"}}
    return tok, config, ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"]


def build_tiny_unk():
    # No byte fallback: unknown characters become <unk> (fused), with NFKC + Lowercase + regex Replace,
    # Digits, several Split behaviors and Metaspace pre-tokenization and the Metaspace decoder.
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([
        normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(r"\s+"), " "),
        normalizers.Strip(left=False, right=True)])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("-", behavior="merged_with_next"),
        pre_tokenizers.Split(Regex(r"[,;]+"), behavior="merged_with_previous"),
        pre_tokenizers.Split(Regex(r"[!?]"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"[()\[\]]+"), behavior="contiguous", invert=True),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    alphabet = list("▁abcdefghijklmnopqrstuvwxyz12'")
    trainer = trainers.BpeTrainer(vocab_size=120, limit_alphabet=len(alphabet), initial_alphabet=alphabet,
                                  special_tokens=["<unk>", "<pad>"], show_progress=False)
    tok.train_from_iterator(CORPUS.splitlines(), trainer)
    return tok, None, ["<unk>", "<pad>"]


BUILDERS = {
    "qwen-bytelevel": build_qwen,
    "spm-bytefallback": build_spm,
    "llama3-style": build_llama3,
    "llama4-style": build_llama4,
    "deepseek-style": build_deepseek,
    "tiny-unk": build_tiny_unk,
}

COMMON_TEXTS = [
    "",
    "a",
    " ",
    "\n",
    "Hello world",
    "Hello, world! How are you doing today?",
    "  leading spaces and trailing spaces   ",
    "tabs\tand\ttabs\t\tend",
    "line1\nline2\n\nline3\r\nline4\n",
    "    \n\n   \t  ",
    "DON'T you know? I'M here, it's fine, WE'LL see, they've gone, he'D go.",
    "12345678901234567890 and 3.14159 and 1,000,000",
    "def foo(x):\n    return x * 2  # comment\n",
    "if (x >= 42 && y != 0) { return x / y; }",
    "café naïve résumé Zoë Ångström",
    "cafe\u0301 e\u0301 n\u0303 A\u030a (combining marks)",
    "Ünïcödé ÀÉÎÕÜ ŒÆ ß",
    "日本語のテキスト、中文文本。東京",
    "한국어 텍스트",
    "Ελληνικά и русский текст, عربي",
    "emoji 😀🎉👍🏽 ❤️",
    "family 👨\u200d👩\u200d👧\u200d👦 and flag 🇯🇵 and 🧑🏿\u200d💻",
    "mixed 中文 and English 123 😀 end",
    "ﬁne ligature ① ½ ２０２４ 𝔘𝔫𝔦",
    "x\u00a0y\u2003z\u3000w",
    "SHOUTING CAPITALS AND lowercase",
    "email: someone@example.com, url: https://example.com/path?q=1&r=2",
    "hyphen-ated words-here, semi;colons;; and (paren) [brackets]!",
    "\u0007 control \u001b chars",
    "repeat repeat repeat repeat repeat",
    "The router picks the top k experts; their outputs are weighted and summed.",
    "Mixture of Experts models route each token to a few experts out of many. " * 4,
    "ShoalExperts EXPERTS Shoal 日本",
    "trailing newline\n\n",
    "½ starts with an NFKC expansion",
]


def special_texts(specials):
    out = []
    for s in specials:
        out += [f"{s}Hello", f"Hello{s}", f"a {s} b", f"x  {s}  y", f"{s}{s}", f"word{s}word"]
    if len(specials) >= 2:
        out.append(f"{specials[0]}start middle{specials[1]} end {specials[0]}")
    return out


def extra_texts(name):
    if name == "llama3-style":
        return ["call <tool>  now", "  <tool>x", "moe moe_ xmoe moe. (moe)", "a moe b", "MoE moes",
                "<tool_end> and <tool_end>x", "<tool><tool>"]
    return []


def make_cases(tok, name, specials):
    texts = COMMON_TEXTS + special_texts(specials) + extra_texts(name)
    cases = []
    for text in texts:
        case = {"text": text}
        for add, key in ((True, "with_special"), (False, "no_special")):
            ids = tok.encode(text, add_special_tokens=add).ids
            case[key] = {"ids": ids,
                         "decode": tok.decode(ids, skip_special_tokens=False),
                         "decode_skip_special": tok.decode(ids, skip_special_tokens=True)}
        cases.append(case)
    streams = []
    for text in [COMMON_TEXTS[21], COMMON_TEXTS[17] + " " + COMMON_TEXTS[14], COMMON_TEXTS[10],
                 COMMON_TEXTS[8], special_texts(specials)[-1]]:
        ids = tok.encode(text, add_special_tokens=True).ids
        for skip in (False, True):
            # What HF's own streaming decoder emits, step by step; the total is the full decode.
            stream = decoders.DecodeStream(skip_special_tokens=skip)
            steps = [stream.step(tok, i) or "" for i in ids]
            full = tok.decode(ids, skip_special_tokens=skip)
            streams.append({"ids": ids, "skip_special_tokens": skip, "text": full, "hf_steps": steps})
    return {"tokenizers_version": tokenizers.__version__, "cases": cases, "streams": streams}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only")
    args = ap.parse_args()
    for name, build in BUILDERS.items():
        if args.only and name != args.only:
            continue
        tok, config, specials = build()
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        spec = json.loads(tok.to_str())
        if name == "spm-bytefallback":
            # tokenizers re-serializes merges as pairs; keep the "a b" string form Mistral files use.
            spec["model"]["merges"] = [" ".join(m) for m in spec["model"]["merges"]]
        text = json.dumps(spec, ensure_ascii=False)  # compact: the fixtures stay small
        assert Tokenizer.from_str(text).to_str() == tok.to_str()
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        if config is not None:
            with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump(config, f, ensure_ascii=False, indent=2)
                f.write("\n")
        cases = make_cases(tok, name, specials)
        with open(os.path.join(d, "cases.json"), "w", encoding="utf-8") as f:
            # One case per line: small, and a regeneration diffs case by case.
            f.write('{"tokenizers_version": %s,\n "cases": [\n' % json.dumps(cases["tokenizers_version"]))
            f.write(",\n".join(json.dumps(c, ensure_ascii=False) for c in cases["cases"]))
            f.write('],\n "streams": [\n')
            f.write(",\n".join(json.dumps(c, ensure_ascii=False) for c in cases["streams"]))
            f.write("]}\n")
        print(f"{name}: vocab {tok.get_vocab_size()}, {len(cases['cases'])} cases -> {d}")


if __name__ == "__main__":
    sys.exit(main())
