#!/usr/bin/env python3
"""Records a model's real expert load: starts `shoal up` with CONFIG, sends every line of PROMPTS as a
greedy chat request (CONCURRENCY at a time, MAX_TOKENS each), then saves GET /v1/expert_load to OUT —
the form `shoal bench balance --load` replays and `shoal plan --calibrate` reads.

usage: record_expert_load.py SHOAL CONFIG PROMPTS OUT [--max-tokens N] [--concurrency N]
"""
import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.request


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shoal")
    ap.add_argument("config")
    ap.add_argument("prompts")
    ap.add_argument("out")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8)
    a = ap.parse_args()
    prompts = [l.strip() for l in open(a.prompts) if l.strip()]
    up = subprocess.Popen([a.shoal, "up", "--config", a.config], stdout=subprocess.PIPE, text=True)
    try:
        url = up.stdout.readline().strip()
        if not url.startswith("http://"):
            sys.exit("shoal up did not become ready")
        todo = list(enumerate(prompts))
        lock = threading.Lock()

        def worker():
            while True:
                with lock:
                    if not todo:
                        return
                    _, p = todo.pop()
                post(url + "/v1/chat/completions", {"messages": [{"role": "user", "content": p}],
                                                    "max_tokens": a.max_tokens, "temperature": 0})
        threads = [threading.Thread(target=worker) for _ in range(a.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(2.0)  # every rank's next heartbeat carries its counts up to the last step
        with urllib.request.urlopen(url + "/v1/expert_load", timeout=60) as r:
            load = json.load(r)
        json.dump(load, open(a.out, "w"), indent=1)
        g = next(iter(load["groups"].values()))
        print("%d prompts, %d routed tokens over %.1f s, rank imbalance %.3f -> %s" %
              (len(prompts), sum(map(sum, g["tokens"])), g["window_seconds"], g["rank_imbalance"], a.out))
    finally:
        up.terminate()
        up.wait(timeout=60)


if __name__ == "__main__":
    main()
