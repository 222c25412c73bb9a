#!/usr/bin/env python3
"""End to end, as a newcomer meets shoal: `shoal up` with no config (configs/local-cpu.yaml, the
trained demo model models/demo-kjv-moe on 2 ranks) and the README's curl request. Checks that the
streamed answer is English and is the one the README quotes (the request is seeded); that greedy
chat answers over HTTP are exactly transformers' (the reference.json tools/demo-model/reference.py
wrote); and that the experts are really used: the per-expert row counts in /metrics are spread over
the experts, not piled on one.

usage: demo_test.py SHOAL_BINARY SOURCE_DIR
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

SHOAL, SRC = sys.argv[1], sys.argv[2]
MODEL = os.path.join(SRC, "models", "demo-kjv-moe")
FAILURES = []
# Frequent English function words; an English answer is full of them, noise is not.
COMMON = set("""the and of to that in he shall unto for i his a lord they be is him not them it with all thou
thy was god which my me said but ye their have will thee from as are when this out were upon man you by
at we she her our us there so then what who no into before come came one up an or if had on hath let do""".split())


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)


def curl(url, body):
    r = subprocess.run(["curl", "-sS", "-N", url, "-H", "Content-Type: application/json", "-d", json.dumps(body)],
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout


def main():
    env = dict(os.environ, OMPI_MCA_mpi_yield_when_idle="1")
    # A log of its own (concurrent runs, other users' files), removed at the end unless something failed.
    log = tempfile.NamedTemporaryFile("w", prefix="shoal-demo-e2e-", suffix=".log", delete=False)
    proc = subprocess.Popen([SHOAL, "up", "--port", "0"], stdout=subprocess.PIPE, stderr=log, env=env, text=True)
    try:
        url = proc.stdout.readline().strip()
        check(url.startswith("http://127.0.0.1:"), "shoal up with no config serves on 127.0.0.1 (%s)" % url)
        if not url.startswith("http://"):
            return
        ref = json.load(open(os.path.join(MODEL, "reference.json")))

        # The README's request, taken from README.md, and the answer the README quotes.
        readme = open(os.path.join(SRC, "README.md")).read()
        body = json.loads(re.search(r"curl -N http://127\.0\.0\.1:8000/v1/chat/completions .*?-d '(\{.*?\})'",
                                    readme, re.S).group(1))
        quoted = re.search(r"^> (.*)$", readme, re.M).group(1)
        rc, out = curl(url + "/v1/chat/completions", body)
        events = [l[len("data: "):] for l in out.splitlines() if l.startswith("data: ")]
        check(rc == 0 and events and events[-1] == "[DONE]", "curl gets a streamed answer ending in [DONE]")
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]
                       if json.loads(e).get("choices"))
        words = re.findall(r"[A-Za-z]+", text)
        common = sum(w.lower() in COMMON for w in words)
        print("answer:", repr(text))
        check(text == quoted, "the answer is the one README.md quotes")
        check(len(words) >= 8, "the answer has words (%d)" % len(words))
        check(common >= 0.25 * max(1, len(words)), "the answer is English: %d of %d words are common English words"
              % (common, len(words)))
        check(sum(c.isascii() and (c.isalpha() or c in " ,.;:'!?-\n") for c in text) >= 0.95 * max(1, len(text)),
              "the answer is made of letters, spaces and punctuation")

        # Greedy over HTTP = transformers' greedy, for every reference chat.
        for case in ref["cases"]:
            if "messages" not in case:
                continue
            req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps({
                "model": "shoal-demo", "temperature": 0, "max_tokens": ref["max_new_tokens"],
                "messages": case["messages"]}).encode(), headers={"Content-Type": "application/json"})
            got = json.load(urllib.request.urlopen(req, timeout=120))["choices"][0]["message"]["content"]
            check(got == case["text"], "greedy answer to %r is transformers' (%r)" % (case["messages"][-1]["content"], got))

        # The experts are used: rows per expert from /metrics, summed over the group's ranks.
        # The counts travel in worker heartbeats (every 500 ms): wait for ones sent after the requests.
        rows, deadline = {}, time.time() + 10
        while time.time() < deadline:
            metrics = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
            rows = {}
            for m in re.finditer(r'^shoal_expert_tokens_total\{[^}]*expert="(\d+)"[^}]*\} (\S+)$', metrics, re.M):
                rows[int(m.group(1))] = rows.get(int(m.group(1)), 0) + float(m.group(2))
            if len(rows) == 8 and sum(rows.values()) > 0:
                break
            time.sleep(0.3)
        total = sum(rows.values())
        print("rows per expert:", dict(sorted(rows.items())))
        check(len(rows) == 8 and total > 0, "/metrics reports all 8 experts (%d)" % len(rows))
        check(sum(v > 0 for v in rows.values()) >= 6, "at least 6 of 8 experts processed rows")
        check(total > 0 and max(rows.values()) <= 0.5 * total, "no expert took half the rows (max share %.2f)"
              % (max(rows.values()) / total if total else 0))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                check(proc.wait(timeout=30) == 0, "shoal up stops cleanly on SIGINT")
            except subprocess.TimeoutExpired:
                proc.kill()
                check(False, "shoal up stops within 30 s")
        log.close()
        if FAILURES:
            print(open(log.name).read()[-6000:])
            print("server log kept at", log.name)
        else:
            os.unlink(log.name)
    print("%d failure(s)" % len(FAILURES))
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
