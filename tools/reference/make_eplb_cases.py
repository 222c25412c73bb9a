#!/usr/bin/env python3
"""Reference numbers for shoal's expert placement planner (comm/placement_planner.h): DeepSeek's EPLB
(github.com/deepseek-ai/EPLB, eplb.py, run as published) on skewed loads, written with the loads to
tests/fixtures/eplb/cases.json, so CI compares without torch.

    /tmp/tvenv/bin/python tools/reference/make_eplb_cases.py PATH/TO/eplb.py tests/fixtures/eplb/cases.json

Loads: Zipf over the experts (exponent 0.8, 1.0, 1.2; the ranks of the experts shuffled with a fixed
seed, so hot experts are not neighbours) and a "few hot" load (4 experts take half the tokens); shapes
from a small EP8 to DeepSeek-V3's 256 experts in 8 groups over 32 ranks on 4 nodes with 32 redundant.
The metric: max / mean of the tokens each rank serves, every expert's tokens split evenly over its
copies — what EPLB balances.
"""
import importlib.util
import json
import sys

import torch


def load_eplb(path):
    spec = importlib.util.spec_from_file_location("eplb", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def zipf(num_experts, s, seed, tokens=100000):
    g = torch.Generator().manual_seed(seed)
    w = torch.tensor([1.0 / (k + 1) ** s for k in range(num_experts)])
    w = w[torch.randperm(num_experts, generator=g)]
    return [round(float(x) * tokens / float(w.sum())) for x in w]


def few_hot(num_experts, seed, tokens=100000):
    g = torch.Generator().manual_seed(seed)
    hot = torch.randperm(num_experts, generator=g)[:4].tolist()
    rest = (tokens // 2) // (num_experts - 4)
    return [tokens // 8 if e in hot else rest for e in range(num_experts)]


def eplb_max_over_mean(eplb, load, num_ranks, nodes, redundant, groups):
    weight = torch.tensor([load], dtype=torch.float32)
    phys = len(load) + redundant
    phy2log, _, logcnt = eplb.rebalance_experts(weight, phys, groups, nodes, num_ranks)
    per_rank = phys // num_ranks
    rank_load = []
    for r in range(num_ranks):
        s = 0.0
        for p in range(r * per_rank, (r + 1) * per_rank):
            e = int(phy2log[0, p])
            s += load[e] / int(logcnt[0, e])
        rank_load.append(s)
    return max(rank_load) / (sum(rank_load) / len(rank_load))


def main():
    eplb = load_eplb(sys.argv[1])
    cases = []
    shapes = [  # experts, ranks, nodes, redundant, groups
        (64, 8, 1, 0, 8), (64, 8, 1, 8, 8), (64, 8, 1, 16, 8), (64, 16, 1, 16, 8), (64, 16, 2, 16, 8),
        (64, 16, 2, 0, 8), (256, 32, 4, 32, 8), (256, 32, 1, 32, 8), (160, 16, 2, 16, 8),
    ]
    for experts, ranks, nodes, redundant, groups in shapes:
        loads = [("zipf%.1f" % s, zipf(experts, s, 7 + i)) for i, s in enumerate((0.8, 1.0, 1.2))]
        loads.append(("few_hot", few_hot(experts, 11)))
        for lname, load in loads:
            cases.append({
                "name": "%s_E%d_N%d_nodes%d_R%d_G%d" % (lname, experts, ranks, nodes, redundant, groups),
                "load": load, "num_ranks": ranks, "nodes": nodes, "redundant": redundant, "groups": groups,
                "eplb_max_over_mean": eplb_max_over_mean(eplb, load, ranks, nodes, redundant, groups),
            })
    with open(sys.argv[2], "w") as f:
        json.dump({"reference": "deepseek-ai/EPLB eplb.py (rebalance_experts), torch " + torch.__version__,
                   "cases": cases}, f, indent=1)
    print("%d cases" % len(cases))


if __name__ == "__main__":
    main()
