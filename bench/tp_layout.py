#!/usr/bin/env python3
"""The same model on the same ranks as data-parallel attention (D = N, T = 1) and as attention-TP
replicas (D = N / T, T): `shoal worker --batch` under mpirun, the layouts alternated run by run so
that a noisy machine hits both alike. Prints each run's tokens/s and the engine's own split of the
step time (attention, mlp, expert exchange, TP collectives, other) per rank, then the medians and
whether the greedy outputs of the layouts agree.

usage: tp_layout.py SHOAL --model DIR [--ranks 2] [--tp 2] [--requests 16] [--prompt 64]
                    [--max-tokens 32] [--runs 3] [--threads 1]
"""
import argparse
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

PHASES = ["attention", "mlp", "expert exchange", "tp collectives", "other"]


def run(shoal, args, tp, batch, out):
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(args.ranks), shoal, "worker", "--model",
           args.model, "--batch", batch, "--threads", str(args.threads), "--tensor-parallel-size", str(tp),
           "--output", out]
    p = subprocess.run(cmd, capture_output=True, text=True, env={"OMPI_MCA_mpi_yield_when_idle": "1", "PATH": "/usr/bin:/bin"})
    if p.returncode != 0:
        sys.exit("run failed:\n" + p.stderr[-4000:])
    tok_s = float(re.search(r"\(([\d.]+) tok/s\)", p.stderr).group(1))
    ranks = []
    for line in p.stderr.splitlines():
        m = re.search(r"rank (\d+)/\d+\] .*step time: (.*)$", line)
        if m:
            ms = {name: float(v) for name, v in re.findall(r"([a-z ]+?) \d+% \(([\d.]+) ms\)", m.group(2))}
            ranks.append((int(m.group(1)), {k.strip(): v for k, v in ms.items()}))
    return tok_s, [r for _, r in sorted(ranks)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shoal")
    ap.add_argument("--model", required=True)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--tp", type=int, default=2)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    vocab = json.load(open(args.model + "/config.json")).get("vocab_size", 320)
    tmp = tempfile.mkdtemp(prefix="shoal-tp-bench-")
    batch = tmp + "/batch.jsonl"
    rng = random.Random(1)
    with open(batch, "w") as f:
        for i in range(args.requests):
            ids = [rng.randrange(3, min(vocab, 300)) for _ in range(args.prompt)]
            f.write(json.dumps({"id": str(i), "prompt_ids": ids, "max_tokens": args.max_tokens}) + "\n")
    layouts = [(1, "D=%d,T=1" % args.ranks), (args.tp, "D=%d,T=%d" % (args.ranks // args.tp, args.tp))]
    results = {name: [] for _, name in layouts}
    outputs = {}
    for r in range(args.runs):
        for tp, name in layouts:
            out = "%s/out-%d.jsonl" % (tmp, tp)
            tok_s, ranks = run(args.shoal, args, tp, batch, out)
            outputs[name] = [json.loads(l)["tokens"] for l in open(out)]
            results[name].append(tok_s)
            split = "; ".join("rank %d: " % i + ", ".join("%s %.0f" % (k, v) for k, v in rk.items()) for i, rk in enumerate(ranks))
            print("run %d %-9s %7.1f tok/s   ms per rank: %s" % (r + 1, name, tok_s, split), flush=True)
    a, b = (name for _, name in layouts)
    ma, mb = statistics.median(results[a]), statistics.median(results[b])
    print("median %s %.1f tok/s, %s %.1f tok/s: %s / %s = %.2f" % (a, ma, b, mb, b, a, mb / ma))
    same = sum(x == y for x, y in zip(outputs[a], outputs[b]))
    print("greedy outputs identical in %d of %d requests" % (same, len(outputs[a])))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
