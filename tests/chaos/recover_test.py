#!/usr/bin/env python3
"""Chaos: worker faults under a steady load of streaming requests, on a real `shoal up` cluster.

Each scenario first runs a fixed set of requests undisturbed (greedy and seeded sampling, token ids
returned), then runs the same set again as concurrent streams and injects a fault once every stream
has tokens: every accepted request must complete with exactly the undisturbed tokens (migration is
token-exact), the group must be relaunched and /ready come back, the migrations must show in
/metrics, and nothing of the test may be left running. Scenarios:
  kill        kill -9 of a worker rank mid-decode (one group: requests wait for the relaunch)
  stall       SIGSTOP of a rank past the heartbeat timeout, SIGCONT later (the stale rank must not
              disturb the new incarnation)
  two-groups  kill -9 of a rank of one group while another serves (requests move at once)
  flood       kill -9, then a flood of requests past the queue limit while the group is relaunched:
              each is answered 200 (and complete) or 429/503 with Retry-After; nothing admitted is lost
The figures (accepted, completed, migrated, lost, fault → /ready again, the longest pause a stream
saw) are printed as one JSON line per scenario for docs/benchmarks.md.

usage: recover_test.py SHOAL_BINARY SOURCE_DIR [SCENARIO...]
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import shoal_http  # noqa: E402

SHOAL, SRC = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
SCENARIOS = sys.argv[3:] or ["kill", "stall", "two-groups", "flood"]
# The demo model (hidden 256, 4 layers, 1024 positions): slow enough per token that a fault lands
# mid-decode, small enough to load in about a second.
MODEL = os.path.join(SRC, "models/demo-kjv-moe")
FAILURES = []
MAX_TOKENS = 400  # long enough that the fault lands mid-decode


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def requests():
    """Prompts of token ids (the model's vocabulary is 4096): greedy and seeded sampling."""
    out = []
    for i in range(16):
        body = {"prompt": [(173 * i + 57 * k) % 4000 + 10 for k in range(5 + i)], "max_tokens": MAX_TOKENS,
                "ignore_eos": True, "return_token_ids": True}
        body.update({"temperature": 0} if i % 2 == 0 else {"temperature": 0.9, "top_p": 0.95, "seed": 1000 + i})
        out.append(body)
    return out


def start(tmp, groups, tag, max_queued=256):
    cfg = os.path.join(tmp, "chaos-%s.yaml" % tag)
    with open(cfg, "w") as f:
        f.write(f"""
model:
  path: {MODEL}
  name: chaos-{tag}
engine:
  threads: 1
  max_num_seqs: 4          # 16 requests: some wait on their rank, so a fault always finds work
kv_cache:
  block_size: 16
  num_blocks: 256
server:
  port: 0
  heartbeat_ms: 200
  heartbeat_timeout_ms: 1500
  migration_timeout_s: 60
  max_queued_requests: {max_queued}
cluster:
  groups: {groups}
  ranks_per_group: 2
  max_restarts: 3
parallel:
  collective_timeout_ms: 3000
""")
    log = open(os.path.join(tmp, "up-%s.log" % tag), "w")
    env = dict(os.environ, OMPI_MCA_mpi_yield_when_idle="1")
    proc = subprocess.Popen([SHOAL, "up", "--config", cfg], stdout=subprocess.PIPE, stderr=log, env=env, text=True,
                            start_new_session=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.wait(timeout=30)
        print(open(log.name).read()[-4000:])
        raise SystemExit("shoal up did not become ready")
    host, port = url[len("http://"):].rsplit(":", 1)
    return proc, shoal_http.Server(host, int(port)), log.name, cfg


def stop(proc, log, cfg, tag):
    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(timeout=40)
        check(rc == 0, "%s: shoal up stops cleanly (exit %s)" % (tag, rc))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        check(False, "%s: shoal up stops within 40 s of SIGINT" % tag)
    # Every process of this scenario (the workers name its config on their command line) is gone.
    deadline = time.time() + 10
    left = []
    while time.time() < deadline:
        left = subprocess.run(["pgrep", "-f", cfg], capture_output=True, text=True).stdout.split()
        if not left:
            break
        time.sleep(0.2)
    check(not left, "%s: no process of the test is left running (%s)" % (tag, left))
    if FAILURES:
        print("---- shoal up log (%s) ----\n%s" % (tag, open(log).read()[-6000:]))


def undisturbed(s, reqs):
    out = []
    for body in reqs:
        st, j, _, _ = s.request("POST", "/v1/completions", body)
        assert st == 200, (st, j)
        out.append(j["choices"][0]["token_ids"])
    return out


def counter(s, name):
    text = s.request("GET", "/metrics")[2]
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def rank_pids(s, group=None):
    j = s.request("GET", "/v1/cluster")[1]
    return [(g["name"], r["pid"]) for g in j["groups"] if g.get("ranks") for r in g["ranks"]
            if "pid" in r and (group is None or g["name"] == group)]


class Call(threading.Thread):
    def __init__(self, s, body):
        super().__init__()
        self.s, self.body, self.result = s, body, None

    def run(self):
        st, j, _, headers = self.s.request("POST", "/v1/completions", self.body, timeout=120)
        tokens = len(j["choices"][0]["token_ids"]) if st == 200 else 0
        self.result = (st, tokens, headers.get("Retry-After") is not None)


def flood_requests(s, since):
    """60 non-streamed requests over the 3 s after the fault, while the group is down and coming back."""
    calls = []
    for i in range(60):
        c = Call(s, {"prompt": [11 + i % 50, 12, 13], "max_tokens": 8, "ignore_eos": True, "return_token_ids": True,
                     "temperature": 0})
        c.start()
        calls.append(c)
        time.sleep(0.05)
    return calls


def run_scenario(tmp, tag):
    groups = 2 if tag == "two-groups" else 1
    # flood: 2 ranks × 4 sequences + 12 queued = 20 requests held at most; the 16 streams fit.
    proc, s, log, cfg = start(tmp, groups, tag, max_queued=12 if tag == "flood" else 256)
    try:
        reqs = requests()
        want = undisturbed(s, reqs)
        migrated_before = counter(s, "shoal_request_migrations_total")
        # status: 200 once the coordinator admitted the stream.
        threads, status, tokens, arrivals, ends = shoal_http.stream_all(s, "/v1/completions", reqs, timeout=120)
        # The fault comes once decoding is under way and the coordinator has most requests on ranks;
        # it hits the group holding the most, at one of its ranks. Its incarnation tells the relaunch.
        t0 = time.time()
        while time.time() - t0 < 30:
            j = s.request("GET", "/v1/cluster")[1]
            victim = max(j["groups"], key=lambda g: g["requests_in_flight"])
            # Every stream admitted (the fault tests accepted requests), and decoding under way.
            if all(st is not None for st in status) and any(len(t) >= 2 for t in tokens) and \
                    victim["requests_in_flight"] >= len(reqs) // (2 * groups):
                break
            time.sleep(0.005)
        victim_group, incarnation, in_flight = victim["name"], victim["incarnation"], victim["requests_in_flight"]
        pid = victim["ranks"][-1]["pid"]
        fault_at = time.time()
        if tag == "stall":
            os.kill(pid, signal.SIGSTOP)
        else:
            os.kill(pid, signal.SIGKILL)
        flood = []
        if tag == "flood":
            flood = flood_requests(s, fault_at)
        # Ready again: the relaunched group (or, with two groups, the survivor all along).
        back_after = None
        while time.time() - fault_at < 90:
            j = s.request("GET", "/v1/cluster")[1]
            g = [x for x in j["groups"] if x["name"] == victim_group]
            if g and g[0].get("ready") and g[0].get("incarnation") != incarnation:
                back_after = time.time() - fault_at
                break
            time.sleep(0.05)
        check(s.request("GET", "/ready")[0] == 200, "%s: /ready is 200 again" % tag)
        if tag == "stall":
            try:  # the stale rank wakes up after its group was replaced (if the relaunch left it alive)
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        for t in threads:
            t.join(timeout=120)
        completed = sum(1 for i in range(len(reqs)) if ends[i] == "length" and tokens[i] == want[i])
        lost = len(reqs) - completed
        migrated = counter(s, "shoal_request_migrations_total") - migrated_before
        pauses = [max((b - a for a, b in zip(ts, ts[1:])), default=0.0) for ts in arrivals]
        figures = {"scenario": tag, "accepted": len(reqs), "on_failed_group": in_flight, "completed": completed,
                   "migrated": int(migrated), "lost": lost,
                   "fault_to_group_ready_s": None if back_after is None else round(back_after, 2),
                   "longest_stream_pause_s": round(max(pauses), 2)}
        print("FIGURES " + json.dumps(figures), flush=True)
        for i in range(len(reqs)):
            check(ends[i] == "length" and tokens[i] == want[i],
                  "%s: request %d (%s) completes with the undisturbed tokens (%s, %d/%d tokens)" % (
                      tag, i, "greedy" if i % 2 == 0 else "seeded sampling", ends[i], len(tokens[i]), len(want[i])))
        check(in_flight > 0 and migrated >= 1, "%s: the fault hit a group holding %d requests, and requests migrated (%d)"
              % (tag, in_flight, migrated))
        check(back_after is not None, "%s: the failed group is relaunched and ready again (%s s)" % (tag, back_after))
        if tag == "flood":
            # And a burst of 40 at once as the group is back, while the resumed streams still run:
            # past the 2 × 4 running + 12 queued the ranks hold.
            for i in range(40):
                c = Call(s, {"prompt": [21 + i, 22, 23], "max_tokens": 8, "ignore_eos": True,
                             "return_token_ids": True, "temperature": 0})
                c.start()
                flood.append(c)
            for t in flood:
                t.join(timeout=120)
            answers = [t.result for t in flood]
            ok = [a for a in answers if a[0] == 200]
            refused = [a for a in answers if a[0] in (429, 503)]
            check(len(ok) + len(refused) == len(answers) and all(a[2] for a in refused),
                  "flood: every extra request is answered 200 or 429/503 with Retry-After (%d ok, %d refused: %s)"
                  % (len(ok), len(refused), sorted(set(a[0] for a in answers))))
            check(all(a[1] == 8 for a in ok), "flood: every admitted extra request is complete (8 tokens)")
            check(len(refused) > 0, "flood: the flood went past what the server holds (%d refused)" % len(refused))
            figures["flood_admitted"] = len(ok)
            figures["flood_429"] = sum(1 for a in refused if a[0] == 429)
            figures["flood_503"] = sum(1 for a in refused if a[0] == 503)
            print("FIGURES " + json.dumps(figures), flush=True)
        check(pid not in [p for _, p in rank_pids(s)], "%s: the failed rank is not part of the new incarnation" % tag)
        # The relaunched cluster serves the same tokens.
        again = undisturbed(s, reqs[:2])
        check(again == want[:2], "%s: after recovery, new requests give the same tokens" % tag)
        j = s.request("GET", "/v1/cluster")[1]
        g = [x for x in j["groups"] if x["name"] == victim_group][0]
        check("relaunched" in g.get("supervisor", ""), "%s: /v1/cluster says the group was relaunched (%s)"
              % (tag, g.get("supervisor")))
    finally:
        stop(proc, log, cfg, tag)


def main():
    with tempfile.TemporaryDirectory(prefix="shoal-chaos-") as tmp:
        for tag in SCENARIOS:
            run_scenario(tmp, tag)
    print("%d failure(s)" % len(FAILURES))
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
