#!/usr/bin/env python3
"""Coordinator overhead per decode step, and inter-token latency at a fixed load (a benchmark, not a test).

Starts `shoal up` (coordinator + one mpirun group), keeps CONCURRENCY streaming completions running
for SECONDS (each asks for enough tokens to stay in decode; a finished one is replaced at once, so the
load is fixed), and reads /metrics before and after. Reports, side by side from the same run:

  step time        mean wall time of a worker step (from the workers' own counters)
  coordinator/step CPU time of the coordinator per worker step (all its threads, all its work: frames
                   in, detokenizing, stop checks, SSE out, HTTP)
  coordinator/token the same per streamed token (the goal at 64+ streams: <= 10 us)
  overhead share   coordinator/step ÷ step time (goal ≤ 5 %)
  ITL p50 / p99    gaps between SSE events as the client receives them (vLLM's ITL definition)

usage: serve_overhead.py SHOAL_BINARY [--config YAML] [--concurrency N] [--seconds S] [--ranks R]
"""
import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time


def metrics(host, port):
    c = http.client.HTTPConnection(host, port, timeout=30)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def process_cpu_seconds(pid):
    """utime + stime of a process (all its threads), from /proc: the coordinator's CPU whatever its
    metrics report."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def total(ms, name):
    return sum(v for (n, _), v in ms.items() if n == name)


def per_rank(ms, name):
    return {labels: v for (n, labels), v in ms.items() if n == name}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shoal")
    ap.add_argument("--config", default=None)
    ap.add_argument("--model", default=None)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    a = ap.parse_args()
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tmp = tempfile.mkdtemp(prefix="shoal-bench-")
    cfg = a.config
    if cfg is None:
        cfg = os.path.join(tmp, "bench.yaml")
        model = a.model or os.path.join(src, "tests/fixtures/qwen3-moe-f32")
        with open(cfg, "w") as f:
            f.write(f"model:\n  path: {model}\nengine:\n  threads: 1\n  max_num_seqs: 64\n"
                    f"server:\n  port: 0\n  heartbeat_ms: 200\ncluster:\n  groups: 1\n  ranks_per_group: {a.ranks}\n")
    env = dict(os.environ, OMPI_MCA_mpi_yield_when_idle="1")
    log = open(os.path.join(tmp, "shoal-up.log"), "w")
    p = subprocess.Popen([a.shoal, "up", "--config", cfg], stdout=subprocess.PIPE, stderr=log, env=env, text=True)
    url = p.stdout.readline().strip()
    if not url.startswith("http://"):
        sys.exit("shoal up failed; see " + log.name)
    host, port = url[7:].rsplit(":", 1)
    port = int(port)
    stop = threading.Event()
    gaps, counts = [], [0]
    lock = threading.Lock()

    def client():
        while not stop.is_set():
            c = http.client.HTTPConnection(host, port, timeout=120)
            c.request("POST", "/v1/completions", body=json.dumps(
                {"prompt": "The quick brown fox", "max_tokens": a.max_tokens, "temperature": 0, "ignore_eos": True,
                 "stream": True}), headers={"Content-Type": "application/json"})
            r = c.getresponse()
            last, mine = None, []
            while True:
                line = r.fp.readline()
                if not line or line.strip() == b"data: [DONE]":
                    break
                if line.startswith(b"data: "):
                    now = time.perf_counter()
                    if last is not None:
                        mine.append(now - last)
                    last = now
            c.close()
            with lock:
                if not stop.is_set():
                    gaps.extend(mine)
                    counts[0] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    time.sleep(3)  # warm up: every client in decode
    with lock:
        gaps.clear()
    m0 = metrics(host, port)
    cpu0 = process_cpu_seconds(p.pid)
    time.sleep(a.seconds)
    cpu1 = process_cpu_seconds(p.pid)
    m1 = metrics(host, port)
    with lock:
        g = sorted(gaps)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    p.send_signal(2)
    p.wait(timeout=60)

    steps0, steps1 = per_rank(m0, "shoal_worker_steps_total"), per_rank(m1, "shoal_worker_steps_total")
    secs0, secs1 = per_rank(m0, "shoal_worker_step_seconds_total"), per_rank(m1, "shoal_worker_step_seconds_total")
    steps = max(steps1[k] - steps0.get(k, 0) for k in steps1)
    step_time = max((secs1[k] - secs0.get(k, 0)) / max(steps1[k] - steps0.get(k, 0), 1) for k in steps1)
    coord_cpu = cpu1 - cpu0  # `shoal up` is the coordinator; its workers are mpirun's processes
    tokens = total(m1, "shoal_generation_tokens_total") - total(m0, "shoal_generation_tokens_total")
    per_step = coord_cpu / max(steps, 1)

    def pct(q):
        return g[min(len(g) - 1, int(q * len(g)))] if g else float("nan")
    print(f"load: {a.concurrency} concurrent streams x {a.max_tokens} tokens, {a.ranks} ranks, {a.seconds:.0f} s measured")
    print(f"worker steps            {steps:.0f}  ({tokens / a.seconds:.1f} tokens/s)")
    print(f"step time (mean)        {step_time * 1e3:.3f} ms")
    print(f"coordinator CPU / step  {per_step * 1e3:.3f} ms")
    print(f"coordinator CPU / token {coord_cpu / max(tokens, 1) * 1e6:.1f} us  (goal <= 10 us at 64+ streams)")
    print(f"overhead share          {100 * per_step / step_time:.2f} %   (goal <= 5 %)")
    print(f"ITL p50 / p99           {pct(0.5) * 1e3:.2f} / {pct(0.99) * 1e3:.2f} ms  ({len(g)} gaps)")


if __name__ == "__main__":
    main()
