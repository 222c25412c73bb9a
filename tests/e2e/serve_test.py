#!/usr/bin/env python3
"""End to end: `shoal up` starts a real local cluster (coordinator + one mpirun group of 2 worker
ranks) and this script talks to it over real HTTP (Python's http.client), checking what users rely
on: completions and chat, streamed and not, greedy tokens identical to transformers' (the fixture's
expected tokens), the same tokens with 32 requests at once, every error code, cancellation freeing
KV blocks, a killed worker ending its requests with errors and /ready going 503, and a clean stop.

usage: serve_test.py SHOAL_BINARY SOURCE_DIR
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shoal_http  # noqa: E402

SHOAL, SRC = sys.argv[1], sys.argv[2]
FIXTURE = os.path.join(SRC, "tests/fixtures/qwen3-moe-f32")
API_KEY = "test-key-123"
FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def Server(host, port):
    return shoal_http.Server(host, port, API_KEY)


def start_cluster(tmp, fixture=FIXTURE, name="tiny-qwen3-moe", ranks=2, heartbeat_timeout_ms=1500, tp=1):
    cfg = os.path.join(tmp, "cluster-%s.yaml" % name)
    with open(cfg, "w") as f:
        f.write(f"""
model:
  path: {fixture}
  name: {name}
engine:
  threads: 1
  max_num_seqs: 8
  max_step_tokens: 256
kv_cache:
  block_size: 16
  num_blocks: 160
server:
  port: 0
  api_keys: [{API_KEY}]
  max_body_bytes: 65536
  max_queued_requests: 16
  heartbeat_ms: 200
  heartbeat_timeout_ms: {heartbeat_timeout_ms}
  migration_timeout_s: 0   # fail fast: tests/chaos/ covers migration and relaunch
  metrics_vllm_names: true
  expert_load_window_s: 3600   # the whole test: its baseline is the idle group's first heartbeat
cluster:
  groups: 1
  ranks_per_group: {ranks}
  max_restarts: 0
parallel:
  collective_timeout_ms: 3000
  attention_tp: {tp}
""")
    log = open(os.path.join(tmp, "shoal-up.log"), "w")
    env = dict(os.environ, OMPI_MCA_mpi_yield_when_idle="1")
    p = subprocess.Popen([SHOAL, "up", "--config", cfg], stdout=subprocess.PIPE, stderr=log, env=env, text=True)
    url = p.stdout.readline().strip()  # printed once every group is ready
    if not url.startswith("http://"):
        p.wait(timeout=30)
        print(open(log.name).read())
        raise SystemExit("shoal up did not become ready (exit %s)" % p.returncode)
    host, port = url[len("http://"):].rsplit(":", 1)
    return p, Server(host, int(port)), log.name


def stop_cluster(proc, log, what):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=30)
            check(rc == 0, "shoal up stops cleanly on SIGINT %s (exit %s)" % (what, rc))
        except subprocess.TimeoutExpired:
            proc.kill()
            check(False, "shoal up stops within 30 s of SIGINT %s" % what)
    if FAILURES:
        print("---- shoal up log (%s) ----" % what)
        print(open(log).read()[-8000:])


def main():
    expected = json.load(open(os.path.join(FIXTURE, "expected.json")))
    prompts = [(p["prompt_ids"], p["greedy_tokens"]) for p in expected["prompts"]]
    tmp = tempfile.mkdtemp(prefix="shoal-e2e-")
    try:
        # Secure by default: a control plane reachable from other machines needs a join secret.
        open_cfg = os.path.join(tmp, "open.yaml")
        with open(open_cfg, "w") as f:
            f.write(f"model:\n  path: {FIXTURE}\nserver:\n  port: 0\n  control_host: 0.0.0.0\n")
        env = {k: v for k, v in os.environ.items() if k != "SHOAL_CONTROL_TOKEN"}
        r = subprocess.run([SHOAL, "serve", "--config", open_cfg], capture_output=True, text=True, timeout=30, env=env)
        check(r.returncode == 1 and "SHOAL_CONTROL_TOKEN" in r.stderr,
              "shoal serve refuses a control plane open to other machines without a join secret")
        t0 = time.time()
        # A long heartbeat timeout: the queue check holds a rank stopped for a while (run_checks).
        proc, s, log = start_cluster(tmp, heartbeat_timeout_ms=15000)
        print("cluster ready in %.1f s" % (time.time() - t0), flush=True)
        try:
            run_checks(s, prompts, proc)
        finally:
            stop_cluster(proc, log, "after a killed worker")
        # A stalled worker (SIGSTOP: alive, silent) is noticed by its missing heartbeats.
        proc, s, log = start_cluster(tmp)
        try:
            stall_checks(s, prompts)
        finally:
            stop_cluster(proc, log, "after a stalled worker")
        # A Mixtral-style model (SentencePiece byte-fallback tokenizer, [INST] template) on 3 ranks.
        proc, s, log = start_cluster(tmp, os.path.join(SRC, "tests/fixtures/mixtral-top1-f32"), "tiny-mixtral", 3)
        try:
            mixtral_checks(s)
        finally:
            stop_cluster(proc, log, "serving Mixtral on 3 ranks")
        # Llama 4 (the text model of a Llama4ForConditionalGeneration checkpoint) on 3 ranks: 5 experts.
        proc, s, log = start_cluster(tmp, os.path.join(SRC, "tests/fixtures/llama4-scout-bf16"), "tiny-llama4", 3)
        try:
            llama4_checks(s)
        finally:
            stop_cluster(proc, log, "serving Llama 4 on 3 ranks")
        # DeepSeek-V3 (MLA over a latent KV cache, grouped routing) on 2 ranks.
        proc, s, log = start_cluster(tmp, os.path.join(SRC, "tests/fixtures/deepseek-v3-bf16"), "tiny-deepseek", 2)
        try:
            fixture_checks(s, "deepseek-v3-bf16", "deepseek, 2 ranks")
            # The KV cache each rank reports in /metrics is the latent-cache formula: per token and layer
            # kv_lora_rank + qk_rope_head_dim f32 values (no per-head K and V).
            cfg = json.load(open(os.path.join(SRC, "tests/fixtures/deepseek-v3-bf16/config.json")))
            want = cfg["num_hidden_layers"] * (cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"]) * 4
            text = s.request("GET", "/metrics")[2]
            got = [float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("shoal_kv_cache_bytes_per_token{")]
            check(len(got) == 2 and all(g == want for g in got),
                  "deepseek: /metrics KV bytes per token of each rank = layers x (kv_lora + rope) x 4 = %d (%s)" % (want, got))
        finally:
            stop_cluster(proc, log, "serving DeepSeek-V3 on 2 ranks")
        # Attention TP: Qwen2-MoE (shared expert, a dense layer) on 4 ranks as 2 replicas of 2.
        proc, s, log = start_cluster(tmp, os.path.join(SRC, "tests/fixtures/qwen2-moe-f32"), "tiny-qwen2-tp", 4, tp=2)
        try:
            tensor_parallel_checks(s)
        finally:
            stop_cluster(proc, log, "serving Qwen2-MoE with attention TP 2 on 4 ranks")
        launch_without_mpi_checks(tmp, prompts)
        generated_token_checks(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d failure(s)" % len(FAILURES))
    sys.exit(1 if FAILURES else 0)


def generated_token_checks(tmp):
    """shoal serve with no join secret configured makes one (any local user could otherwise join as a
    worker and receive prompts), prints it and writes it to --control-token-file; a worker without it
    is refused, one with it joins."""
    cfg = os.path.join(tmp, "tokenless.yaml")
    with open(cfg, "w") as f:
        f.write(f"model:\n  path: {FIXTURE}\nengine:\n  threads: 1\nkv_cache:\n  num_blocks: 64\nserver:\n  port: 0\n")
    token_file = os.path.join(tmp, "control.token")
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_CONTROL_TOKEN"}
    err = open(os.path.join(tmp, "tokenless-serve.log"), "w+")
    serve = subprocess.Popen([SHOAL, "serve", "--config", cfg, "--control-token-file", token_file],
                             stdout=subprocess.DEVNULL, stderr=err, text=True, env=env)
    try:
        log, t0 = "", time.time()
        while "SHOAL_CONTROL_TOKEN=" not in log and time.time() - t0 < 30:
            time.sleep(0.1)
            err.seek(0)
            log = err.read()
        m = re.search(r"workers join with SHOAL_CONTROL_TOKEN=([0-9a-f]+)", log)
        if not check(m is not None, "shoal serve without a configured secret makes one and says so"):
            return
        token = m.group(1)
        check(len(token) == 32 and open(token_file).read().strip() == token and
              (os.stat(token_file).st_mode & 0o777) == 0o600,
              "the generated secret is 128 bits, also in --control-token-file (mode 0600)")
        control = re.search(r"workers connect to (\S+)", log).group(1)

        def worker(token_env):
            e = dict(env, SHOAL_CONTROL_TOKEN=token_env) if token_env else env
            return subprocess.run([SHOAL, "worker", "--config", cfg, "--coordinator", control, "--rank", "0",
                                   "--world-size", "1", "--connect-timeout", "10"], capture_output=True, text=True,
                                  env=e, timeout=60)
        r = worker(None)
        check(r.returncode != 0 and "control token" in r.stderr,
              "a worker without the generated secret is refused (%s)" % r.stderr.strip()[-120:])
        joined = subprocess.Popen([SHOAL, "worker", "--config", cfg, "--coordinator", control, "--rank", "0",
                                   "--world-size", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=dict(env, SHOAL_CONTROL_TOKEN=token))
        t0, ok = time.time(), False
        while time.time() - t0 < 30 and not ok and joined.poll() is None:
            time.sleep(0.1)
            err.seek(0)
            ok = "connected" in err.read()
        check(ok, "a worker with the generated secret joins")
        joined.kill()
        joined.wait()
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()


def launch_without_mpi_checks(tmp, prompts):
    """Workers started without mpirun (--rank/--world-size): a CPU rank serving alone, and a GPU pair
    meeting at the coordinator, which hands rank 0's NCCL id to rank 1 (on a machine without a GPU the
    pair then stops at device selection, after the rendezvous)."""
    cfg = os.path.join(tmp, "nompi.yaml")
    with open(cfg, "w") as f:
        f.write(f"model:\n  path: {FIXTURE}\n  name: tiny-qwen3-moe\nengine:\n  threads: 1\n"
                f"kv_cache:\n  num_blocks: 64\nserver:\n  port: 0\n  api_keys: [{API_KEY}]\n"
                f"  control_token: nompi-secret\nparallel:\n  startup_timeout_s: 60\n")
    err = open(os.path.join(tmp, "nompi-serve.log"), "w+")
    serve = subprocess.Popen([SHOAL, "serve", "--config", cfg], stdout=subprocess.DEVNULL, stderr=err, text=True)
    env = dict(os.environ, SHOAL_CONTROL_TOKEN="nompi-secret")
    workers = []
    try:
        line, t0 = "", time.time()
        while "workers connect to" not in line and time.time() - t0 < 30:
            time.sleep(0.1)
            err.seek(0)
            line = next((l for l in err.read().splitlines() if "workers connect to" in l), "")
        if not check(bool(line), "shoal serve (for workers launched without MPI) is up"):
            return
        url = line.split(" on http://")[1].split(";")[0]
        control = line.rsplit(" ", 1)[1]
        s = Server(url.rsplit(":", 1)[0], int(url.rsplit(":", 1)[1]))

        def worker(*args, token=True):
            e = env if token else {k: v for k, v in env.items() if k != "SHOAL_CONTROL_TOKEN"}
            return subprocess.Popen([SHOAL, "worker", "--config", cfg, "--coordinator", control, "--connect-timeout", "10",
                                     *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=e, text=True)

        solo = worker("--rank", "0", "--world-size", "1", "--group", "solo")
        workers.append(solo)
        t0 = time.time()
        while s.request("GET", "/ready", key=None)[0] != 200 and time.time() - t0 < 30 and solo.poll() is None:
            time.sleep(0.1)
        prompt, greedy = prompts[0]
        ids, _ = completion_ids(s, prompt, len(greedy))
        check(ids == greedy, "a CPU worker launched without MPI (--rank 0 --world-size 1) serves transformers' tokens")

        # A GPU pair without MPI: rank 1 asks first and waits; rank 0 posts its NCCL id.
        r1 = worker("--rank", "1", "--world-size", "2", "--device", "cuda", "--group", "gpus")
        workers.append(r1)
        time.sleep(0.5)
        r0 = worker("--rank", "0", "--world-size", "2", "--device", "cuda", "--group", "gpus")
        workers.append(r0)
        _, e0 = r0.communicate(timeout=60)
        if "built without CUDA" in e0:
            r1.kill()
            check(r0.returncode == 1, "without CUDA in this build, a GPU rank launched without MPI says so")
        elif shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0:
            r1.kill()
            print("skip the GPU pair: this machine has a GPU (two ranks on one GPU are NCCL's to refuse)")
        else:
            _, e1 = r1.communicate(timeout=60)
            fp = [re.search(r"data-plane id ([0-9a-f]{16}) from the coordinator", e) for e in (e0, e1)]
            check(all(fp) and fp[0].group(1) == fp[1].group(1),
                  "without MPI, rank 1 gets rank 0's NCCL id through the coordinator (same fingerprint on both)")
            check(r0.returncode == 1 and r1.returncode == 1 and "CUDA device" in e0 and "CUDA device" in e1,
                  "then both ranks stop at device selection with an error naming the CUDA device (no GPU here)")
        # A rank without the join secret learns nothing.
        intruder = worker("--rank", "1", "--world-size", "2", "--device", "cuda", "--group", "gpus", token=False)
        workers.append(intruder)
        _, e = intruder.communicate(timeout=60)
        check(intruder.returncode == 1 and "refused the rendezvous: wrong or missing control token" in e,
              "a rank without the control token is refused the rendezvous")
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
        if FAILURES:
            err.seek(0)
            print("---- shoal serve log (workers without MPI) ----")
            print(err.read()[-4000:])


def mixtral_checks(s):
    fixture_checks(s, "mixtral-top1-f32", "mixtral, 3 ranks")
    rebalance_checks(s, "mixtral-top1-f32", "mixtral, 3 ranks")
    st, j, _, _ = s.request("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "a"},
                                                                         {"role": "user", "content": "b"}]})
    check_error(st, j, 400, "a conversation the template rejects (raise_exception)", param="messages")
    check(st == 400 and "/" not in j["error"]["message"].split(":")[0], "the template error names no server path")


def fixture_checks(s, name, what):
    """Greedy tokens of every prompt and chat prompt tokens equal transformers'."""
    fixture = os.path.join(SRC, "tests/fixtures", name)
    expected = json.load(open(os.path.join(fixture, "expected.json")))
    for i, p in enumerate(expected["prompts"]):
        st, j, _, _ = s.request("POST", "/v1/completions", {"prompt": p["prompt_ids"], "max_tokens": len(p["greedy_tokens"]),
                                                            "temperature": 0, "ignore_eos": True, "return_token_ids": True})
        check(st == 200 and j["choices"][0]["token_ids"] == p["greedy_tokens"],
              "%s, prompt %d: greedy tokens equal transformers'" % (what, i))
    ref = json.load(open(os.path.join(fixture, "chat_expected.json")))
    for k, c in enumerate(ref["chats"]):
        st, j, _, _ = s.request("POST", "/v1/chat/completions", {"messages": c["messages"], "max_tokens": 2,
                                                                 "temperature": 0, "return_token_ids": True})
        check(st == 200 and j.get("prompt_token_ids") == c["prompt_ids"],
              "%s chat %d: prompt tokens equal transformers' apply_chat_template" % (what, k))


def rebalance_checks(s, name, what):
    """POST /v1/expert_load/rebalance while requests are generating: the ranks load the experts they gain,
    switch together, and every greedy request before, across and after the switch gets the same tokens."""
    expected = json.load(open(os.path.join(SRC, "tests/fixtures", name, "expected.json")))
    prompts = [p["prompt_ids"] for p in expected["prompts"]]

    def generate(k, n=120):
        st, j, _, _ = s.request("POST", "/v1/completions", {"prompt": prompts[k % len(prompts)], "max_tokens": n,
                                                            "temperature": 0, "ignore_eos": True, "return_token_ids": True})
        return j["choices"][0]["token_ids"] if st == 200 else ("error", st, j)
    reference = {k: generate(k) for k in range(len(prompts))}
    time.sleep(0.6)  # a heartbeat after the last step: the window has load to plan from
    results, stop = [], threading.Event()

    def load(k):
        while not stop.is_set():
            results.append((k, generate(k)))
    threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    st, j, _, _ = s.request("POST", "/v1/expert_load/rebalance")
    sent = j["groups"][0] if st == 200 else {}
    check(sent.get("action") == "sent" and sent.get("imbalance_planned", 9) <= sent.get("imbalance_before", 0),
          "%s: POST /v1/expert_load/rebalance plans a placement from the load and sends it (%s)" % (what, sent))
    gen = 0
    for _ in range(100):
        st, c, _, _ = s.request("GET", "/v1/cluster")
        gen = c["groups"][0]["expert_placement"]["generation"] if st == 200 else 0
        if gen == sent.get("generation"):
            break
        time.sleep(0.1)
    time.sleep(0.5)  # requests generating under the new placement too
    stop.set()
    for t in threads:
        t.join()
    check(gen == 1, "%s: every rank serves under placement generation 1 (%s)" % (what, c["groups"][0]["expert_placement"]))
    bad = [(k, r) for k, r in results if r != reference[k % len(prompts)]]
    check(len(results) >= 4 and not bad,
          "%s: %d greedy requests across the switch all got the tokens of before it (%s)" % (what, len(results), bad[:1]))
    st, j, _, _ = s.request("GET", "/v1/expert_load")
    g = j["groups"]["g0"] if st == 200 else {}
    check(g.get("placement_generation") == 1 and len(g.get("placement", [])) == g.get("layers"),
          "%s: GET /v1/expert_load shows the placement per layer" % what)
    text = s.request("GET", "/metrics")[2]
    check(re.search(r'^shoal_expert_placement_generation\{group="g0"[^}]*\} 1$', text, re.M) is not None and
          re.search(r'^shoal_expert_rebalances_total\{group="g0"[^}]*\} 1$', text, re.M) is not None,
          "%s: /metrics counts the rebalance (%s)" % (what, [l for l in text.splitlines() if "rebalance" in l or "placement" in l]))


def tensor_parallel_checks(s):
    """Requests go to replicas (their tp_rank 0); every rank of a replica runs them; tokens stay transformers'."""
    st, j, _, _ = s.request("GET", "/v1/cluster")
    g = j["groups"][0] if st == 200 else {}
    check(g.get("attention_tp") == 2 and g.get("replicas") == 2 and
          sorted((r["replica"], r["tp_rank"]) for r in g.get("ranks", [])) == [(0, 0), (0, 1), (1, 0), (1, 1)],
          "tp: /v1/cluster shows 2 replicas of 2 TP ranks (%s)" % [(r.get("replica"), r.get("tp_rank")) for r in g.get("ranks", [])])
    fixture_checks(s, "qwen2-moe-f32", "tp 2 x 2 replicas")
    expected = json.load(open(os.path.join(SRC, "tests/fixtures/qwen2-moe-f32/expected.json")))
    results = {}

    def one(k):
        p = expected["prompts"][k % len(expected["prompts"])]
        st, j, _, _ = s.request("POST", "/v1/completions", {"prompt": p["prompt_ids"], "max_tokens": len(p["greedy_tokens"]),
                                                            "temperature": 0, "ignore_eos": True, "return_token_ids": True})
        results[k] = st == 200 and j["choices"][0]["token_ids"] == p["greedy_tokens"]
    threads = [threading.Thread(target=one, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(len(results) == 8 and all(results.values()), "tp: 8 concurrent requests over both replicas, tokens equal transformers'")
    time.sleep(0.6)  # the last step's heartbeat (every 200 ms)
    st, j, _, _ = s.request("GET", "/v1/cluster")
    steps = {(r["replica"], r["tp_rank"]): r["steps"] for r in j["groups"][0]["ranks"]} if st == 200 else {}
    check(len(steps) == 4 and steps[(0, 0)] == steps[(0, 1)] and steps[(1, 0)] == steps[(1, 1)] and steps[(0, 0)] > 0,
          "tp: a replica's ranks step together (%s)" % steps)
    text = s.request("GET", "/metrics")[2]
    tp_s = [float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
            if l.startswith("shoal_worker_step_phase_seconds_total{") and 'phase="tp_collectives"' in l]
    att_s = [float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
             if l.startswith("shoal_worker_step_phase_seconds_total{") and 'phase="attention"' in l]
    check(len(tp_s) == 4 and all(v > 0 for v in tp_s) and len(att_s) == 4 and all(v > 0 for v in att_s),
          "tp: /metrics splits every rank's step time, TP collectives included (%s)" % tp_s)
    # Expert load over the window: every MoE layer routed every token to top-k experts, so its counts
    # sum to the same multiple of k; the dense layer routed none.
    cfg = json.load(open(os.path.join(SRC, "tests/fixtures/qwen2-moe-f32/config.json")))
    k, dense = cfg["num_experts_per_tok"], set(cfg.get("mlp_only_layers", []))
    time.sleep(0.6)
    st, j, _, _ = s.request("GET", "/v1/expert_load")
    g = j["groups"]["g0"] if st == 200 else {}
    sums = [sum(row) for row in g.get("tokens", [])]
    moe = [v for l, v in enumerate(sums) if l not in dense]
    check(g.get("layers") == cfg["num_hidden_layers"] and g.get("experts") == cfg["num_experts"] and
          all(sums[l] == 0 for l in dense) and len(set(moe)) == 1 and moe[0] > 0 and moe[0] % k == 0 and
          g.get("rank_imbalance", 0) >= 1 and g.get("window_seconds", 0) > 0,
          "GET /v1/expert_load: each MoE layer routed the same tokens x top-%d, the dense layer none (%s)" % (k, sums))
    st, c, _, _ = s.request("GET", "/v1/cluster")
    el = c["groups"][0].get("expert_load", {}) if st == 200 else {}
    text = s.request("GET", "/metrics")[2]
    check(el.get("tokens") == sum(sums) and 'shoal_expert_load_imbalance{' in text,
          "/v1/cluster and /metrics show the window's expert load (%s)" % el)
    rebalance_checks(s, "qwen2-moe-f32", "tp, 4 ranks")


def llama4_checks(s):
    fixture_checks(s, "llama4-scout-bf16", "llama4, 3 ranks (chunked attention past 2 chunks)")
    # A sampled chat, long enough to cross several chunks of 4.
    st, j, _, _ = s.request("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hello!"}],
                                                             "max_tokens": 24, "temperature": 0.8, "seed": 3})
    check(st == 200 and j["usage"]["completion_tokens"] >= 1 and j["choices"][0]["finish_reason"] in ("stop", "length"),
          "llama4 chat completion with sampling")
    st, j, _, _ = s.request("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]})
    check_error(st, j, 400, "llama4: image input is refused (the vision tower is not served)",
                param="messages[0].content")


def streams_mid_generation(s, prompt, n, stop_pid):
    """Starts n long streams and SIGSTOPs stop_pid (a worker rank) the moment the first token of any of
    them arrives — so none can finish, however fast the model — then waits until all n are in flight
    at the coordinator. Returns the threads and their outcomes ("error", "finished" or "no final event",
    appended as each ends)."""
    first = threading.Event()
    lock = threading.Lock()
    outcomes = []

    def stream():
        def on_event(ev, conn):
            with lock:
                if not first.is_set():
                    os.kill(stop_pid, signal.SIGSTOP)
                    first.set()
        st, events, done = s.stream("/v1/completions", {"prompt": prompt, "max_tokens": 220, "temperature": 0,
                                                         "ignore_eos": True, "stream": True}, on_event=on_event, timeout=30)
        outcomes.append(("error" if events and "error" in events[-1] else "finished") if done else "no final event")
    ts = [threading.Thread(target=stream) for _ in range(n)]
    for t in ts:
        t.start()
    check(first.wait(timeout=30), "the streams started generating")
    deadline = time.time() + 5
    while time.time() < deadline and s.request("GET", "/v1/cluster")[1]["requests_in_flight"] < n:
        time.sleep(0.02)
    return ts, outcomes


def completion_ids(s, prompt, n, **extra):
    body = {"model": "tiny-qwen3-moe", "prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True,
            "return_token_ids": True}
    body.update(extra)
    st, j, text, _ = s.request("POST", "/v1/completions", body)
    assert st == 200, (st, text)
    return j["choices"][0]["token_ids"], j


def check_error(st, j, code_http, what, code=None, param=None):
    ok = st == code_http and isinstance(j, dict) and "error" in j and "message" in j["error"]
    if code is not None:
        ok = ok and j["error"].get("code") == code
    if param is not None:
        ok = ok and j["error"].get("param") == param
    check(ok, "%s → %d (%s)" % (what, code_http, (j or {}).get("error", {}).get("message", "")[:80]))


def run_checks(s, prompts, proc):
    st, j, _, _ = s.request("GET", "/health", key=None)
    check(st == 200, "/health is 200")
    st, j, _, _ = s.request("GET", "/ready", key=None)
    check(st == 200 and j["status"] == "ready", "/ready is 200 once the cluster is up")
    st, j, _, _ = s.request("GET", "/v1/models")
    check(st == 200 and j["data"][0]["id"] == "tiny-qwen3-moe", "/v1/models lists the model")
    st, j, _, _ = s.request("GET", "/v1/cluster")
    check(st == 200 and len(j["groups"][0]["ranks"]) == 2 and all(r["state"] == "up" for r in j["groups"][0]["ranks"]),
          "/v1/cluster shows one group of two ranks, both up")
    experts = sorted(e for r in j["groups"][0]["ranks"] for e in r["experts"])
    check(experts == list(range(10)), "the ranks' experts cover the model's 10 once")
    # Only workers holding the cluster's join secret (shoal up made one) may join and receive prompts.
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_CONTROL_TOKEN"}
    r = subprocess.run(["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "1", SHOAL, "worker", "--model", FIXTURE,
                        "--coordinator", j["control_address"], "--group", "intruder", "--connect-timeout", "5"],
                       capture_output=True, text=True, timeout=60, env=env)
    check(r.returncode != 0 and "control token" in r.stderr, "a worker without the control token is rejected")
    check(len(s.request("GET", "/v1/cluster")[1]["groups"]) == 1, "the rejected worker formed no group")

    # Greedy tokens over HTTP equal transformers' (the fixture), non-streamed and streamed.
    for i, (prompt, greedy) in enumerate(prompts):
        ids, j = completion_ids(s, prompt, len(greedy))
        check(ids == greedy, "prompt %d: greedy tokens over HTTP equal transformers'" % i)
        check(j["usage"]["prompt_tokens"] == len(prompt) and j["usage"]["completion_tokens"] == len(greedy),
              "prompt %d: usage counts" % i)
        check(j["choices"][0]["finish_reason"] == "length", "prompt %d: finish_reason length" % i)
        text = j["choices"][0]["text"]
        st, events, done = s.stream("/v1/completions", {"model": "tiny-qwen3-moe", "prompt": prompt, "max_tokens": len(greedy),
                                                         "temperature": 0, "ignore_eos": True, "stream": True,
                                                         "stream_options": {"include_usage": True}})
        streamed = "".join(e["choices"][0]["text"] for e in events if e.get("choices"))
        check(st == 200 and done, "prompt %d: stream ends with data: [DONE]" % i)
        check(streamed == text, "prompt %d: streamed text equals the non-streamed text" % i)
        check(events[-1].get("usage", {}).get("completion_tokens") == len(greedy) and events[-1]["choices"] == [],
              "prompt %d: the last stream chunk carries usage" % i)

    # The prompt tokens the server makes from text — chat template and tokenizer — equal transformers'
    # apply_chat_template / tokenizer (tools/reference/attach_tokenizers.py).
    ref = json.load(open(os.path.join(FIXTURE, "chat_expected.json")))
    for k, c in enumerate(ref["chats"]):
        st, j, text, _ = s.request("POST", "/v1/chat/completions", {"messages": c["messages"], "max_tokens": 2,
                                                                    "temperature": 0, "return_token_ids": True})
        check(st == 200 and j.get("prompt_token_ids") == c["prompt_ids"],
              "chat %d: prompt tokens equal transformers' apply_chat_template" % k)
    for k, c in enumerate(ref["completions"]):
        st, j, text, _ = s.request("POST", "/v1/completions", {"prompt": c["prompt"], "max_tokens": 2, "temperature": 0,
                                                               "return_token_ids": True})
        check(st == 200 and j["choices"][0].get("prompt_token_ids") == c["prompt_ids"],
              "completion prompt %d: tokens equal transformers' tokenizer" % k)

    # Chat, both ways.
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Héllo 👋 — say something"}]
    st, j, text, _ = s.request("POST", "/v1/chat/completions", {"model": "tiny-qwen3-moe", "messages": msgs, "max_tokens": 12,
                                                                "temperature": 0})
    check(st == 200 and j["object"] == "chat.completion" and j["choices"][0]["message"]["role"] == "assistant",
          "chat completion answers (%s)" % st)
    chat_text = j["choices"][0]["message"]["content"] if st == 200 else None
    st, events, done = s.stream("/v1/chat/completions", {"model": "tiny-qwen3-moe", "messages": msgs, "max_tokens": 12,
                                                         "temperature": 0, "stream": True})
    deltas = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e.get("choices"))
    check(done and deltas == chat_text, "streamed chat equals the non-streamed chat")
    check(events and events[0]["choices"][0]["delta"].get("role") == "assistant", "the first chat chunk names the role")
    check(events[-1]["choices"][0]["finish_reason"] in ("stop", "length"), "the last chat chunk has a finish_reason")

    # Batching invariance: 32 requests at once give the same tokens as one at a time.
    results, errors = {}, []

    def one(k):
        i = k % len(prompts)
        try:
            ids, _ = completion_ids(s, prompts[i][0], len(prompts[i][1]))
            results[k] = (i, ids)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
    threads = [threading.Thread(target=one, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors and len(results) == 32, "32 concurrent requests all succeed (%s)" % errors[:2])
    check(all(ids == prompts[i][1] for i, ids in results.values()), "32 concurrent requests: tokens identical to one at a time")

    # Sampling options are honoured: a seed reproduces, stop strings cut the text.
    a = s.request("POST", "/v1/completions", {"prompt": prompts[0][0], "max_tokens": 10, "temperature": 1.0, "seed": 7,
                                              "ignore_eos": True})[1]
    b = s.request("POST", "/v1/completions", {"prompt": prompts[0][0], "max_tokens": 10, "temperature": 1.0, "seed": 7,
                                              "ignore_eos": True})[1]
    check(a["choices"][0]["text"] == b["choices"][0]["text"], "the same seed gives the same text")
    full = s.request("POST", "/v1/completions", {"prompt": "Hello world", "max_tokens": 20, "temperature": 0,
                                                 "ignore_eos": True})[1]["choices"][0]["text"]
    stop_at = next((k for k in range(2, len(full)) if full[k].isalpha()), None)
    if check(stop_at is not None, "the greedy text has a letter to stop at"):
        stop = full[stop_at:stop_at + 2]
        r = s.request("POST", "/v1/completions", {"prompt": "Hello world", "max_tokens": 20, "temperature": 0,
                                                  "ignore_eos": True, "stop": [stop]})[1]
        check(r["choices"][0]["text"] == full[:full.find(stop)] and r["choices"][0]["finish_reason"] == "stop",
              "a stop string ends the text just before it")

    ids, j = completion_ids(s, prompts[0][0], 20, stop_token_ids=[prompts[0][1][2]], ignore_eos=False)
    check(ids == prompts[0][1][:3] and j["choices"][0]["finish_reason"] == "stop",
          "stop_token_ids end generation at that token (finish_reason stop)")

    # shoal bench serve against this cluster: a small sweep, its JSON and its picture.
    bench_dir = tempfile.mkdtemp(prefix="shoal-bench-")
    out_json = os.path.join(bench_dir, "bench.json")
    r = subprocess.run([SHOAL, "bench", "serve", "--url", "http://%s:%d" % (s.host, s.port), "--api-key", API_KEY,
                        "--model", FIXTURE, "--num-prompts", "12", "--random-input-len", "16",
                        "--random-output-len", "24", "--sweep", "20,200", "--slo", "ttft:1000", "--save-json", out_json,
                        "--svg", out_json + ".svg", "--quiet"], capture_output=True, text=True, timeout=120)
    ok = r.returncode == 0
    if ok:
        runs = json.load(open(out_json))["runs"]
        ok = len(runs) == 2 and all(x["completed"] == 12 and x["failed"] == 0 and x["ttft_ms"]["median"] > 0 and
                                    x["output_token_throughput"] > 0 for x in runs)
        ok = ok and "</svg>" in open(out_json + ".svg").read()
    shutil.rmtree(bench_dir, ignore_errors=True)
    check(ok, "shoal bench serve: a 2-point sweep completes every request, with JSON and SVG (%s)" % r.stderr[-300:])

    # Every error code, in the OpenAI shape.
    st, j, _, _ = s.request("POST", "/v1/completions", {"prompt": "x", "stop_token_ids": list(range(1100))})
    check_error(st, j, 400, "too many stop_token_ids", param="stop_token_ids")
    st, j, _, _ = s.request("POST", "/v1/completions", raw="{not json")
    check_error(st, j, 400, "malformed JSON")
    st, j, _, _ = s.request("POST", "/v1/completions", {"prompt": "x", "temperature": 5})
    check_error(st, j, 400, "temperature out of range", param="temperature")
    st, j, _, _ = s.request("POST", "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]})
    check_error(st, j, 400, "unknown chat role")
    st, j, _, _ = s.request("POST", "/v1/completions", {"prompt": "x", "max_tokens": 100000})
    check_error(st, j, 400, "prompt + max_tokens beyond the context", code="context_length_exceeded")
    st, j, _, _ = s.request("POST", "/v1/completions", {"prompt": [1, 2, 99999], "max_tokens": 2})
    check_error(st, j, 400, "token id outside the vocabulary", param="prompt")
    st, j, _, _ = s.request("POST", "/v1/completions", {"prompt": "x"}, key=None)
    check_error(st, j, 401, "no API key")
    st, j, _, _ = s.request("POST", "/v1/completions", {"prompt": "x"}, key="wrong")
    check_error(st, j, 401, "a wrong API key")
    st, j, _, _ = s.request("POST", "/v1/completions", {"model": "gpt-9", "prompt": "x"})
    check_error(st, j, 404, "unknown model", code="model_not_found")
    st, j, _, _ = s.request("POST", "/v1/completions", raw=json.dumps({"prompt": "x" * 70000}))
    check_error(st, j, 413, "body over server.max_body_bytes")
    st, j, _, _ = s.request("GET", "/v1/nothing")
    check_error(st, j, 404, "unknown endpoint")

    # Queue full: fill every slot and the queue with long streams, then one more gets 429 + Retry-After.
    # A rank is stopped (SIGSTOP) the moment the first token arrives, so no stream can finish while
    # the queue fills, however fast the model or slow the machine; it resumes after the check.
    holders, stop_holders = [], threading.Event()
    started = threading.Semaphore(0)
    paused_pid = s.request("GET", "/v1/cluster")[1]["groups"][0]["ranks"][1]["pid"]
    first, first_lock = threading.Event(), threading.Lock()

    def hold():
        def on_event(ev, conn):
            with first_lock:
                if not first.is_set():
                    os.kill(paused_pid, signal.SIGSTOP)
                    first.set()
            started.release()
            stop_holders.wait()
            conn.sock.shutdown(socket.SHUT_RDWR)  # the client goes away mid-stream
            return False
        s.stream("/v1/completions", {"prompt": prompts[0][0], "max_tokens": 200, "temperature": 0, "ignore_eos": True,
                                     "stream": True}, on_event=on_event)
    capacity = 2 * 8 + 16
    for _ in range(capacity):
        t = threading.Thread(target=hold)
        t.start()
        holders.append(t)
    deadline = time.time() + 60
    while time.time() < deadline:
        if s.request("GET", "/v1/cluster")[1]["requests_in_flight"] >= capacity:
            break
        time.sleep(0.1)
    st, j, _, headers = s.request("POST", "/v1/completions", {"prompt": "x", "max_tokens": 2})
    check_error(st, j, 429, "one request beyond the queue", code="queue_full")
    check(headers.get("Retry-After") is not None, "429 carries Retry-After")
    os.kill(paused_pid, signal.SIGCONT)

    # Cancellation: clients that disconnect free their requests and KV blocks within a step or so.
    for _ in range(capacity):
        started.acquire(timeout=60)
    stop_holders.set()
    for t in holders:
        t.join()
    deadline = time.time() + 10
    freed = False
    while time.time() < deadline:
        j = s.request("GET", "/v1/cluster")[1]
        ranks = j["groups"][0]["ranks"]
        if j["requests_in_flight"] == 0 and all(r["kv_blocks_used"] == 0 and r["running"] == 0 for r in ranks):
            freed = True
            break
        time.sleep(0.1)
    check(freed, "disconnected clients' requests are cancelled and their KV blocks freed (%s)" %
          [(r["kv_blocks_used"], r["running"]) for r in ranks])
    m = s.request("GET", "/metrics", key=None)[2]
    for series in ["shoal_time_to_first_token_seconds_bucket", "shoal_inter_token_latency_seconds_bucket",
                   "shoal_e2e_request_latency_seconds_count", "shoal_generation_tokens_total", "shoal_kv_cache_usage_ratio",
                   "shoal_worker_last_step_seconds", "shoal_expert_tokens_total", "shoal_requests_total", "shoal_queue_depth"]:
        check(series in m, "/metrics has " + series)
    # vLLM's names (server.metrics_vllm_names), as its production-metrics page and docs/design/metrics.md
    # list them with their types, each series labelled with the served model, as vLLM's Grafana
    # dashboard filters them; the native series carry model_name too.
    vllm_names = {"vllm:num_requests_running": "gauge", "vllm:num_requests_waiting": "gauge",
                  "vllm:kv_cache_usage_perc": "gauge", "vllm:gpu_cache_usage_perc": "gauge",
                  "vllm:num_preemptions_total": "counter", "vllm:prompt_tokens_total": "counter",
                  "vllm:generation_tokens_total": "counter", "vllm:request_success_total": "counter",
                  "vllm:iteration_tokens_total": "histogram", "vllm:request_prompt_tokens": "histogram",
                  "vllm:request_generation_tokens": "histogram", "vllm:time_to_first_token_seconds": "histogram",
                  "vllm:inter_token_latency_seconds": "histogram", "vllm:time_per_output_token_seconds": "histogram",
                  "vllm:e2e_request_latency_seconds": "histogram", "vllm:request_queue_time_seconds": "histogram",
                  "vllm:request_prefill_time_seconds": "histogram", "vllm:request_decode_time_seconds": "histogram"}
    for name, kind in sorted(vllm_names.items()):
        series = [l for l in m.splitlines() if l.startswith(name + "{") or l.startswith(name + "_")]
        check("# TYPE %s %s" % (name, kind) in m and series and
              all('model_name="tiny-qwen3-moe"' in l for l in series),
              "/metrics has vLLM's %s (%s, model_name on %d series)" % (name, kind, len(series)))
    ok_lines = [l for l in m.splitlines() if l.startswith("vllm:request_success_total{")]
    check(any('finished_reason="length"' in l for l in ok_lines), "vllm:request_success_total is labelled finished_reason")
    count = lambda name: sum(float(l.rsplit(" ", 1)[1]) for l in m.splitlines() if l.startswith(name + "_count{"))
    check(count("vllm:request_prefill_time_seconds") > 0 and count("vllm:iteration_tokens_total") > 0,
          "the workers' histograms reached /metrics (prefill %g, iterations %g)"
          % (count("vllm:request_prefill_time_seconds"), count("vllm:iteration_tokens_total")))
    native = [l for l in m.splitlines() if l.startswith("shoal_") and not l.startswith("#")]
    check(native and all('model_name="tiny-qwen3-moe"' in l for l in native), "every shoal_ series has model_name")

    # A killed worker: its in-flight streams end with an error event, /ready goes 503 within seconds,
    # and new requests get 503 with Retry-After. No request is left without an outcome.
    j = s.request("GET", "/v1/cluster")[1]
    pid = j["groups"][0]["ranks"][1]["pid"]
    vs, outcomes = streams_mid_generation(s, prompts[1][0], 4, pid)
    os.kill(pid, signal.SIGKILL)  # every stream is in flight, at least one mid-generation
    killed_at = time.time()
    unready_after = None
    while time.time() - killed_at < 15:
        st = s.request("GET", "/ready", key=None)[0]
        if st == 503:
            unready_after = time.time() - killed_at
            break
        time.sleep(0.05)
    check(unready_after is not None and unready_after < 5, "/ready is 503 within 5 s of a worker's death (%s s)" % unready_after)
    for t in vs:
        t.join(timeout=20)
    check(len(outcomes) == 4 and all(o == "error" for o in outcomes),
          "every stream on the dead group ends with an error event (%s)" % outcomes)
    st, j, _, headers = s.request("POST", "/v1/completions", {"prompt": "x", "max_tokens": 2})
    check_error(st, j, 503, "a request while no group is ready")
    check(headers.get("Retry-After") is not None, "503 carries Retry-After")
    j = s.request("GET", "/v1/cluster")[1]
    check(j["requests_in_flight"] == 0 and not j["groups"][0]["ready"], "nothing is left in flight; the group shows unready")


def stall_checks(s, prompts):
    j = s.request("GET", "/v1/cluster")[1]
    pid = j["groups"][0]["ranks"][0]["pid"]
    ts, outcomes = streams_mid_generation(s, prompts[0][0], 2, pid)
    stopped_at = time.time()
    unready_after = None
    while time.time() - stopped_at < 15:
        if s.request("GET", "/ready", key=None)[0] == 503:
            unready_after = time.time() - stopped_at
            break
        time.sleep(0.05)
    check(unready_after is not None and unready_after < 4,
          "/ready is 503 within 4 s of a worker stalling (heartbeat timeout 1.5 s; took %s s)" % unready_after)
    for t in ts:
        t.join(timeout=20)
    check(len(outcomes) == 2 and all(o == "error" for o in outcomes),
          "streams on a stalled group end with an error event (%s)" % outcomes)
    j = s.request("GET", "/v1/cluster")[1]
    errs = [r.get("error", "") for r in j["groups"][0]["ranks"]]
    check(any("heartbeat" in e for e in errs), "/v1/cluster says which rank stopped heartbeating (%s)" % errs)
    os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
