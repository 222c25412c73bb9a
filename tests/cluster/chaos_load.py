#!/usr/bin/env python3
"""Streams a fixed set of requests at a coordinator, injects a fault once they are under way, and checks
that every one completes with exactly the tokens of an undisturbed run (tests/cluster/chaos_hosts_test.sh).

  chaos_load.py URL API_KEY GROUP TAG FAULT_CMD [HEAL_CMD HEAL_AFTER_S]

FAULT_CMD (and HEAL_CMD, HEAL_AFTER_S seconds later) are shell commands. Prints ok/FAIL lines and one
"FIGURES {...}" line; exits 1 on a failure.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import shoal_http  # noqa: E402

MAX_TOKENS = 300
FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)


def main():
    url, key, group, tag, fault = sys.argv[1:6]
    heal = sys.argv[6] if len(sys.argv) > 6 else None
    heal_after = float(sys.argv[7]) if len(sys.argv) > 7 else 0
    host, port = url[len("http://"):].rsplit(":", 1)
    s = shoal_http.Server(host, int(port), key)
    reqs = []
    for i in range(8):
        body = {"prompt": [(173 * i + 57 * k) % 4000 + 10 for k in range(5 + i)], "max_tokens": MAX_TOKENS,
                "ignore_eos": True, "return_token_ids": True}
        body.update({"temperature": 0} if i % 2 == 0 else {"temperature": 0.9, "seed": 500 + i})
        reqs.append(body)
    want = []
    for body in reqs:
        st, j, _, _ = s.request("POST", "/v1/completions", body, timeout=120)
        assert st == 200, (st, j)
        want.append(j["choices"][0]["token_ids"])

    def migrations():
        text = s.request("GET", "/metrics")[2]
        return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("shoal_request_migrations_total"))

    migrated0 = migrations()
    threads, _, tokens, arrivals, ends = shoal_http.stream_all(s, "/v1/completions", reqs)
    t0 = time.time()
    while time.time() - t0 < 60 and not all(len(t) >= 2 for t in tokens):
        time.sleep(0.01)
    cluster = s.request("GET", "/v1/cluster")[1]
    g = [x for x in cluster["groups"] if x["name"] == group][0]
    incarnation, on_group = g["incarnation"], g["requests_in_flight"]
    fault_at = time.time()
    subprocess.run(fault, shell=True, check=True)
    if heal:
        time.sleep(heal_after)
        subprocess.run(heal, shell=True, check=True)
    for t in threads:
        t.join(timeout=240)
    done_at = time.time()
    cluster = s.request("GET", "/v1/cluster")[1]
    g = [x for x in cluster["groups"] if x["name"] == group][0]
    completed = sum(1 for i in range(len(reqs)) if ends[i] == "length" and tokens[i] == want[i])
    pauses = [max((b - a for a, b in zip(ts, ts[1:])), default=0.0) for ts in arrivals]
    figures = {"scenario": tag, "accepted": len(reqs), "on_group_at_fault": on_group, "completed": completed,
               "migrated": int(migrations() - migrated0), "lost": len(reqs) - completed,
               "relaunched": g["incarnation"] != incarnation, "fault_to_last_token_s": round(done_at - fault_at, 2),
               "longest_stream_pause_s": round(max(pauses), 2)}
    print("FIGURES " + json.dumps(figures), flush=True)
    for i in range(len(reqs)):
        check(ends[i] == "length" and tokens[i] == want[i],
              "%s: request %d completes with the undisturbed tokens (%s, %d/%d)" % (tag, i, ends[i], len(tokens[i]),
                                                                                     len(want[i])))
    check(on_group > 0, "%s: the fault came with %d requests on the group" % (tag, on_group))
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
