#!/usr/bin/env python3
"""The OpenAI-parity features through the official `openai` Python SDK (installed by scripts/setup.sh
into .venv-test; this script exits 77, skipped, when it is not there), against a real `shoal up`:

  - the sampling knobs: logit_bias, min_p, min_tokens, repetition_penalty (vLLM's names, sent the way
    vLLM users send them: extra_body for the non-OpenAI ones), each with an outcome that can only hold
    if the knob was applied;
  - generation_config.json defaults (the model copy here says temperature 0): a request that sets no
    temperature is greedy, one that sets 1.0 is not bound by it;
  - --reasoning-parser deepseek_r1: the chat's text arrives as reasoning_content, streamed and whole,
    and both equal what the tokens decode to (/detokenize);
  - /tokenize (prompt and chat forms), /detokenize, /version, and the API key on the first two;
  - logprobs: chat (logprobs + top_logprobs) and completions (logprobs: k), streamed and whole, equal
    to the log-softmax of transformers' logits (the fixture's) for the greedy tokens;
  - echo (completions), whole and streamed; prompt_logprobs (completions and chat) and echo with
    logprobs, equal to the log-softmax of transformers' prefill logits;
  - n choices (completions and chat, whole and streamed): choice i equals the request with seed + i;
  - forced tool calls: tool_choice "required" and a named function, whole and streamed, the calls'
    arguments fitting the tools' schemas (constrained on the worker);
  - what is still refused: prompt_logprobs with stream, n > 128, a forced call whose schema uses a
    keyword shoal cannot enforce (a 400 naming the field, which the SDK raises).

usage: openai_sdk_test.py SHOAL_BINARY SOURCE_DIR
"""
import json
import math
import os
import struct
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shoal_http  # noqa: E402

try:
    import openai
except ImportError:
    print("SKIP: the openai SDK is not installed (scripts/setup.sh puts it in .venv-test)")
    sys.exit(77)

SHOAL, SRC = sys.argv[1], sys.argv[2]
FIXTURE = os.path.join(SRC, "tests/fixtures/qwen3-moe-f32")
KEY = "sdk-test-key"
FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def start(tmp):
    model = os.path.join(tmp, "model")
    shutil.copytree(FIXTURE, model, ignore=shutil.ignore_patterns("expected*", "chat_expected.json"))
    with open(os.path.join(model, "generation_config.json"), "w") as f:
        json.dump({"temperature": 0.0, "top_p": 0.9}, f)
    # Room for the template's tool preamble (~500 tokens with this byte-level vocabulary): the random
    # model computes any position, so its copy may claim a longer context than the fixture's 256.
    cfg_path = os.path.join(model, "config.json")
    mc = json.load(open(cfg_path))
    mc["max_position_embeddings"] = 1024
    json.dump(mc, open(cfg_path, "w"))
    cfg = os.path.join(tmp, "sdk.yaml")
    with open(cfg, "w") as f:
        f.write(f"""
model:
  path: {model}
  name: tiny
engine:
  threads: 1
kv_cache:
  block_size: 16
  num_blocks: 160
server:
  port: 0
  api_keys: [{KEY}]
  reasoning_parser: deepseek_r1
cluster:
  ranks_per_group: 2
  max_restarts: 0
""")
    log = open(os.path.join(tmp, "up.log"), "w")
    p = subprocess.Popen([SHOAL, "up", "--config", cfg], stdout=subprocess.PIPE, stderr=log, text=True,
                         env=dict(os.environ, OMPI_MCA_mpi_yield_when_idle="1"))
    url = p.stdout.readline().strip()
    if not url.startswith("http://"):
        p.wait(timeout=30)
        print(open(log.name).read())
        raise SystemExit("shoal up did not become ready")
    return p, url, log.name


def reference_logits(name):
    """The fixture's transformers logits (expected.safetensors: an 8-byte header length, the JSON
    header, then f32 data), as {tensor: (rows, vocab, flat list)}."""
    raw = open(os.path.join(FIXTURE, "expected.safetensors"), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    t = header[name]
    a, b = t["data_offsets"]
    vals = struct.unpack("<%df" % ((b - a) // 4), raw[8 + n + a:8 + n + b])
    return t["shape"], vals


def log_softmax_row(vals, row, vocab):
    r = vals[row * vocab:(row + 1) * vocab]
    m = max(r)
    z = m + math.log(sum(math.exp(v - m) for v in r))
    return [v - z for v in r]


def main():
    expected = json.load(open(os.path.join(FIXTURE, "expected.json")))
    prompt = expected["prompts"][0]["prompt_ids"]
    greedy = expected["prompts"][0]["greedy_tokens"]
    tmp = tempfile.mkdtemp(prefix="shoal-sdk-")
    proc, url, log = start(tmp)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        host, port = url[len("http://"):].rsplit(":", 1)
        raw = shoal_http.Server(host, int(port), KEY)

        def ids(**kw):
            extra = kw.pop("extra_body", {})
            r = client.completions.create(model="tiny", prompt=prompt, extra_body={"return_token_ids": True, **extra}, **kw)
            return r.choices[0].model_extra["token_ids"], r

        # generation_config.json says temperature 0: no temperature in the request → greedy.
        got, _ = ids(max_tokens=len(greedy), seed=1)
        got2, _ = ids(max_tokens=len(greedy), seed=2)
        check(got == greedy and got2 == greedy,
              "generation_config.json's temperature 0 applies to a request that sets none (greedy = transformers')")
        # min_p 1 keeps only the most likely token: temperature 1 is greedy then.
        got, _ = ids(max_tokens=len(greedy), temperature=1.0, seed=3, extra_body={"min_p": 1.0})
        check(got == greedy, "min_p 1.0 at temperature 1 draws the greedy tokens")
        # logit_bias (OpenAI's own field): +100 on token 7 makes every token 7.
        got, _ = ids(max_tokens=4, temperature=0, logit_bias={"7": 100})
        check(got == [7, 7, 7, 7], "logit_bias +100 on token 7 gives 7 7 7 7 (%s)" % got)
        # min_tokens: the greedy first token as a stop id ends at once, unless min_tokens holds it off.
        got, r = ids(max_tokens=4, temperature=0, extra_body={"stop_token_ids": [greedy[0]]})
        check(got == [greedy[0]] and r.choices[0].finish_reason == "stop", "a stop id that is the first greedy token ends at once")
        got, r = ids(max_tokens=4, temperature=0, extra_body={"stop_token_ids": [greedy[0]], "min_tokens": 2})
        check(len(got) >= 2 and got[0] != greedy[0] and greedy[0] not in got[:2],
              "min_tokens 2 keeps the stop id out of the first two tokens (%s)" % got)
        # repetition_penalty 1 is neutral; a strong one stops greedy repeating a token it has output:
        # token 7, biased +10, comes first either way, and again only without the penalty.
        got, _ = ids(max_tokens=len(greedy), temperature=0, extra_body={"repetition_penalty": 1.0})
        check(got == greedy, "repetition_penalty 1.0 is neutral")
        plain, _ = ids(max_tokens=3, temperature=0, logit_bias={"7": 10})
        pen, _ = ids(max_tokens=3, temperature=0, logit_bias={"7": 10}, extra_body={"repetition_penalty": 50.0})
        check(plain == [7, 7, 7] and pen[0] == 7 and 7 not in pen[1:],
              "repetition_penalty 50 stops a repeated token (%s without, %s with)" % (plain, pen))

        # Reasoning (deepseek_r1: the output starts inside <think>): the random model never closes it,
        # so its text is all reasoning_content — streamed and whole alike, and what its tokens decode to.
        msgs = [{"role": "user", "content": "Hi"}]
        r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0,
                                           extra_body={"return_token_ids": True})
        m = r.choices[0].message
        reasoning = m.model_extra.get("reasoning_content")
        out_ids = r.choices[0].model_extra["token_ids"]
        if r.choices[0].finish_reason == "stop":
            out_ids = out_ids[:-1]  # the EOS (special: not in the message text)
        st, dj, _, _ = raw.request("POST", "/detokenize", {"tokens": out_ids})
        check(st == 200 and reasoning == dj["prompt"] and m.content is None,
              "chat with --reasoning-parser deepseek_r1: reasoning_content = the decoded output, content null "
              "(%r, %r, %r)" % (reasoning, dj and dj.get("prompt"), m.content))
        streamed_r, streamed_c = "", ""
        for ch in client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0, stream=True):
            if ch.choices:
                d = ch.choices[0].delta
                streamed_r += (d.model_extra or {}).get("reasoning_content") or ""
                streamed_c += d.content or ""
        check(streamed_r == reasoning and streamed_c == "", "streamed delta.reasoning_content adds up to the whole one")

        # Tokenizer endpoints.
        st, tj, _, _ = raw.request("POST", "/tokenize", {"prompt": "hello world", "add_special_tokens": False})
        st2, dj, _, _ = raw.request("POST", "/detokenize", {"tokens": tj["tokens"] if tj else []})
        check(st == 200 and tj["count"] == len(tj["tokens"]) and tj["max_model_len"] > 0 and st2 == 200 and
              dj["prompt"] == "hello world", "/tokenize then /detokenize gives the text back")
        st, cj, _, _ = raw.request("POST", "/tokenize", {"messages": msgs, "add_generation_prompt": True})
        check(st == 200 and cj["tokens"] == r.model_extra.get("prompt_token_ids"),
              "/tokenize of a chat = the prompt ids the chat request used")
        st, _, _, _ = raw.request("POST", "/tokenize", {"prompt": "x"}, key=None)
        check(st == 401, "/tokenize needs the API key (%s)" % st)
        st, vj, _, _ = raw.request("GET", "/version", key=None)
        check(st == 200 and isinstance(vj.get("version"), str), "/version answers without a key")
        st, _, _, _ = raw.request("POST", "/detokenize", {"tokens": [10 ** 6]})
        check(st == 400, "/detokenize refuses an id outside the vocabulary")

        # Logprobs of the greedy tokens = log-softmax of transformers' logits at each step.
        (pshape, pvals), (dshape, dvals) = reference_logits("prompt0.prefill_logits"), reference_logits("prompt0.decode_logits")
        vocab = pshape[1]
        ref = [log_softmax_row(pvals, pshape[0] - 1, vocab)] + [log_softmax_row(dvals, i, vocab) for i in range(dshape[0])]
        n = len(greedy)
        r = client.completions.create(model="tiny", prompt=prompt, max_tokens=n, temperature=0, logprobs=3,
                                      extra_body={"return_token_ids": True})
        lp = r.choices[0].logprobs
        close = all(abs(lp.token_logprobs[i] - ref[i][greedy[i]]) < 2e-4 for i in range(n))
        check(r.choices[0].model_extra["token_ids"] == greedy and len(lp.tokens) == n and close and
              all(len(t) <= 3 for t in lp.top_logprobs) and lp.text_offset[0] == 0,
              "completions logprobs: 3 alternatives, token_logprobs = transformers' log-softmax within 2e-4")
        c = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                           temperature=0, logprobs=True, top_logprobs=2)
        content = c.choices[0].logprobs.content
        check(len(content) == c.usage.completion_tokens and all(len(e.top_logprobs) == 2 and
              e.top_logprobs[0].logprob == e.logprob and e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob and
              bytes(e.bytes).decode("utf-8", "replace") == e.token for e in content),
              "chat logprobs: one entry per token with bytes and 2 alternatives, the greedy token the most likely")
        streamed = []
        for ch in client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=4, temperature=0, logprobs=True, top_logprobs=2,
                                                 stream=True):
            if ch.choices and ch.choices[0].logprobs and ch.choices[0].logprobs.content:
                streamed += ch.choices[0].logprobs.content
        check([(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content],
              "streamed chat logprobs add up to the whole response's")

        # Tools: the model's own template renders them (Qwen3's, hermes calls); this random model writes
        # no call, so its text stays content (the parsing itself: tests/unit/tool_parser_test.cc).
        tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
        t = client.chat.completions.create(model="tiny", messages=msgs, tools=tools, max_tokens=4, temperature=0)
        check(t.choices[0].finish_reason in ("stop", "length") and not t.choices[0].message.tool_calls,
              "a chat with tools and no call in the output: finish_reason %s, no tool_calls" % t.choices[0].finish_reason)

        # Forced tool calls: tool_choice "required" or a named function holds the output to the tools'
        # schemas on the worker (this random model would never write a call by itself); the calls come
        # back as tool_calls, the streamed deltas adding up to the whole response's.
        wtools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                   "parameters": {"type": "object", "properties": {
                       "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}, "days": {"type": "integer"},
                       "ok": {"type": "boolean"}}, "required": ["unit", "days", "ok"]}}},
                  {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}]

        def valid_args(name, text):
            try:
                a = json.loads(text)
            except ValueError:
                return False
            if name == "ping":
                return a == {}
            return (list(a) == ["unit", "days", "ok"] and a["unit"] in ("celsius", "fahrenheit") and
                    type(a["days"]) is int and type(a["ok"]) is bool)

        def streamed_calls(**kw):
            calls, finish = {}, None
            for ch in client.chat.completions.create(stream=True, **kw):
                if not ch.choices:
                    continue
                for d in ch.choices[0].delta.tool_calls or []:
                    c = calls.setdefault(d.index, {"name": None, "arguments": "", "ids": 0})
                    if d.id:
                        c["ids"] += 1
                        c["name"] = d.function.name
                    c["arguments"] += d.function.arguments or ""
                finish = ch.choices[0].finish_reason or finish
            return [calls[i] for i in sorted(calls)], finish

        named = dict(model="tiny", messages=msgs, tools=wtools, max_tokens=200, temperature=1.0, seed=5,
                     tool_choice={"type": "function", "function": {"name": "get_weather"}})
        r = client.chat.completions.create(**named)
        calls = r.choices[0].message.tool_calls or []
        check(r.choices[0].finish_reason == "stop" and len(calls) == 1 and calls[0].function.name == "get_weather" and
              valid_args("get_weather", calls[0].function.arguments) and not r.choices[0].message.content,
              "named tool_choice: one get_weather call whose arguments fit its schema (%r)" %
              (calls[0].function.arguments if calls else None))
        s, finish = streamed_calls(**named)
        check(finish == "stop" and len(s) == 1 and s[0]["ids"] == 1 and s[0]["name"] == "get_weather" and
              calls and s[0]["arguments"] == calls[0].function.arguments,
              "named tool_choice streamed: the arguments' deltas add up to the whole response's")
        # One call (parallel_tool_calls false) keeps this random model's output short; with several
        # allowed it may write calls until max_tokens, and a cut-off array stays content.
        required = dict(model="tiny", messages=msgs, tools=wtools, max_tokens=300, temperature=1.0, seed=9,
                        tool_choice="required", parallel_tool_calls=False)
        r = client.chat.completions.create(**required)
        calls = r.choices[0].message.tool_calls or []
        whole = [(c.function.name, c.function.arguments) for c in calls]
        check(r.choices[0].finish_reason == "tool_calls" and len(calls) == 1 and all(valid_args(n, a) for n, a in whole),
              "tool_choice required: a call of one of the tools, with arguments that fit its schema (%r)" % whole)
        s, finish = streamed_calls(**required)
        check(finish == "tool_calls" and [(c["name"], c["arguments"]) for c in s] == whole and
              all(c["ids"] == 1 for c in s), "tool_choice required streamed: the same call, delta by delta")
        several = {**required, "parallel_tool_calls": True, "max_tokens": 300}
        r = client.chat.completions.create(**several)
        calls = r.choices[0].message.tool_calls or []
        fin = r.choices[0].finish_reason
        check((fin == "tool_calls" and len(calls) >= 1 and
               all(valid_args(c.function.name, c.function.arguments) for c in calls) and len({c.id for c in calls}) == len(calls))
              or (fin == "length" and not calls and r.choices[0].message.content.lstrip().startswith("[")),
              "tool_choice required, several calls allowed: %s with %d whole call(s), or cut off as content" % (fin, len(calls)))
        try:
            bad = [{"type": "function", "function": {"name": "zip", "parameters": {
                "type": "object", "properties": {"code": {"type": "string", "pattern": "^[0-9]{5}$"}}}}}]
            client.chat.completions.create(model="tiny", messages=msgs, tools=bad, tool_choice="required", max_tokens=5)
            check(False, "a forced call with a schema shoal cannot enforce is refused")
        except openai.BadRequestError as e:
            check(e.body is not None and e.body.get("param") == "tools[0].function.parameters" and
                  "pattern" in e.body.get("message", ""),
                  "a forced call whose schema has 'pattern' is a 400 naming the tool's parameters and the keyword")

        # echo: the prompt's text before the completion's, whole and streamed.
        plain = client.completions.create(model="tiny", prompt="The cat", max_tokens=3, temperature=0)
        echoed = client.completions.create(model="tiny", prompt="The cat", max_tokens=3, temperature=0, echo=True)
        streamed = "".join(c.choices[0].text for c in client.completions.create(
            model="tiny", prompt="The cat", max_tokens=3, temperature=0, echo=True, stream=True) if c.choices)
        check(echoed.choices[0].text == "The cat" + plain.choices[0].text and streamed == echoed.choices[0].text,
              "echo puts the prompt before the completion, streamed and whole (%r)" % echoed.choices[0].text)

        # Prompt logprobs (vLLM's prompt_logprobs) = log-softmax of transformers' prefill logits at the
        # position before each prompt token; the first token has none.
        P = pshape[0]
        want = [None] + [log_softmax_row(pvals, i - 1, vocab)[prompt[i]] for i in range(1, P)]
        r = client.completions.create(model="tiny", prompt=prompt, max_tokens=2, temperature=0,
                                      extra_body={"prompt_logprobs": 2})
        pl = r.choices[0].model_extra.get("prompt_logprobs") or []
        check(len(pl) == P and pl[0] is None and
              all(abs(pl[i][str(prompt[i])]["logprob"] - want[i]) < 2e-4 and pl[i][str(prompt[i])]["rank"] >= 1 and
                  1 <= len(pl[i]) <= 3 for i in range(1, P)),
              "completions prompt_logprobs: one per prompt token after the first, = transformers' within 2e-4")
        c = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=2, temperature=0,
                                           extra_body={"prompt_logprobs": 0, "return_token_ids": True})
        cpl = c.model_extra.get("prompt_logprobs") or []
        check(len(cpl) == len(c.model_extra["prompt_token_ids"]) and cpl[0] is None and all(len(d) == 1 for d in cpl[1:]),
              "chat prompt_logprobs at the top level, one per prompt token (%d for %d)" % (len(cpl), len(c.model_extra["prompt_token_ids"])))
        # echo with logprobs: the prompt's tokens lead the logprobs (first null), then the output's.
        e = client.completions.create(model="tiny", prompt=prompt, max_tokens=n, temperature=0, echo=True, logprobs=1)
        lp = e.choices[0].logprobs
        check(len(lp.tokens) == P + n and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None and
              all(abs(lp.token_logprobs[i] - want[i]) < 2e-4 for i in range(1, P)) and
              all(abs(lp.token_logprobs[P + i] - ref[i][greedy[i]]) < 2e-4 for i in range(n)) and
              lp.text_offset == sorted(lp.text_offset),
              "echo with logprobs: prompt then output logprobs, = transformers' within 2e-4")
        streamed = []
        for ch in client.completions.create(model="tiny", prompt=prompt, max_tokens=n, temperature=0, echo=True,
                                            logprobs=1, stream=True):
            if ch.choices and ch.choices[0].logprobs:
                streamed += ch.choices[0].logprobs.token_logprobs
        check(streamed == lp.token_logprobs, "streamed echo with logprobs adds up to the whole response's")

        # n choices: the prompt prefilled once on one rank, choice i sampled with the seed + i — each
        # equal to a request of n = 1 with that seed; greedy choices are all transformers' tokens.
        def sampled(seed, **kw):
            r = client.completions.create(model="tiny", prompt=prompt, max_tokens=n, temperature=1.0, seed=seed,
                                          extra_body={"return_token_ids": True}, **kw)
            return r, [c.model_extra["token_ids"] for c in sorted(r.choices, key=lambda c: c.index)]
        r3, three = sampled(100, n=3)
        singles = [sampled(100 + i)[1][0] for i in range(3)]
        check([c.index for c in r3.choices] == [0, 1, 2] and three == singles and
              r3.usage.prompt_tokens == len(prompt) and r3.usage.completion_tokens == sum(len(t) for t in three),
              "n=3: choice i = the same request with seed + i; usage counts the prompt once (%s vs %s)" % (three, singles))
        g = client.completions.create(model="tiny", prompt=prompt, max_tokens=n, temperature=0, n=2,
                                      extra_body={"return_token_ids": True})
        check(all(c.model_extra["token_ids"] == greedy for c in g.choices) and len(g.choices) == 2,
              "n=2 greedy: both choices are transformers' greedy tokens")
        per = {}
        for ch in client.completions.create(model="tiny", prompt=prompt, max_tokens=n, temperature=1.0, seed=100, n=3,
                                            stream=True, extra_body={"return_token_ids": True}):
            for c in ch.choices:
                per.setdefault(c.index, []).extend(c.model_extra.get("token_ids") or [])
        check([per.get(i) for i in range(3)] == three, "n=3 streamed: each index's tokens = the whole response's")
        cn = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=3, temperature=1.0, seed=5, n=2)
        streamed_c = {}
        for ch in client.chat.completions.create(model="tiny", messages=msgs, max_tokens=3, temperature=1.0, seed=5,
                                                 n=2, stream=True):
            for c in ch.choices:
                d = (c.delta.model_extra or {}).get("reasoning_content") or c.delta.content or ""
                streamed_c[c.index] = streamed_c.get(c.index, "") + d
        whole_c = {c.index: (c.message.model_extra.get("reasoning_content") or "") + (c.message.content or "")
                   for c in cn.choices}
        check(len(cn.choices) == 2 and streamed_c == whole_c, "chat n=2, whole and streamed alike")

        # Still refused, by name.
        try:
            client.completions.create(model="tiny", prompt=prompt, max_tokens=2, stream=True,
                                      extra_body={"prompt_logprobs": 1})
            check(False, "prompt_logprobs with stream is refused")
        except openai.BadRequestError as e:
            check(e.body is not None and e.body.get("param") == "prompt_logprobs",
                  "prompt_logprobs with stream is refused with a 400, as vLLM's")
        try:
            client.chat.completions.create(model="tiny", messages=msgs, max_tokens=2, n=129)
            check(False, "n > 128 is refused")
        except openai.BadRequestError as e:
            check(e.body is not None and e.body.get("param") == "n", "n > 128 is refused with a 400 naming it")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if FAILURES:
            print(open(log).read()[-6000:])
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d failure(s)" % len(FAILURES))
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
