#!/usr/bin/env python3
"""An installed shoal, used the way a vLLM user would: `cmake --install` into a scratch prefix, then
the installed `shoal up` — from another directory, with no --config — serving the demo model with the
vLLM-style flags (--served-model-name, --api-key, --max-model-len, --dtype, --kv-cache-memory-fraction,
--device),
checked over HTTP; and the start-up error when --max-model-len cannot fit the KV cache.

usage: install_test.py BUILD_DIR SOURCE_DIR
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

BUILD, SRC = sys.argv[1], sys.argv[2]
FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)


def request(url, body=None, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main():
    scratch = tempfile.mkdtemp(prefix="shoal-install-")
    try:
        prefix = os.path.join(scratch, "prefix")
        r = subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix], capture_output=True, text=True)
        check(r.returncode == 0, "cmake --install into a scratch prefix" + ("" if r.returncode == 0 else ": " + r.stderr))
        shoal = os.path.join(prefix, "bin", "shoal")
        share = os.path.join(prefix, "share", "shoal")
        for rel in ["configs/local-cpu.yaml", "configs/gpu-h100.yaml", "configs/gpu-h200.yaml",
                    "models/demo-kjv-moe/config.json", "deploy/slurm/shoal.sbatch"]:
            check(os.path.isfile(os.path.join(share, rel)), "installed share/shoal/" + rel)
        binary = open(shoal, "rb").read()
        check(os.path.abspath(SRC).encode() + b"/configs" not in binary,
              "the installed binary does not name the source tree's configs")

        # From elsewhere, no --config: the installed local-cpu.yaml and demo model.
        elsewhere = os.path.join(scratch, "elsewhere")
        os.mkdir(elsewhere)
        env = dict(os.environ, OMPI_MCA_mpi_yield_when_idle="1")
        env.pop("SHOAL_API_KEY", None)
        log_path = os.path.join(scratch, "up.log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen([shoal, "up", "--port", "0", "--served-model-name", "kjv", "--api-key", "k-123",
                                     "--max-model-len", "256", "--dtype", "bfloat16",
                                     "--kv-cache-memory-fraction", "0.05"],
                                    cwd=elsewhere, stdout=subprocess.PIPE, stderr=log, env=env, text=True,
                                    start_new_session=True)
            try:
                url = proc.stdout.readline().strip()
                check(url.startswith("http://127.0.0.1:"), "installed shoal up (no --config, cwd elsewhere) serves: %r" % url)
                if url.startswith("http://"):
                    code, _ = request(url + "/v1/models")
                    check(code == 401, "--api-key: /v1/models without the key is 401 (%d)" % code)
                    code, models = request(url + "/v1/models", key="k-123")
                    card = (models.get("data") or [{}])[0]
                    check(code == 200 and card.get("id") == "kjv", "--served-model-name: /v1/models lists kjv (%s)" % card)
                    check(card.get("max_model_len") == 256, "--max-model-len: /v1/models says 256 (%s)" % card.get("max_model_len"))
                    code, out = request(url + "/v1/completions", {"model": "kjv", "prompt": "In the beginning",
                                                                  "max_tokens": 8, "temperature": 0}, key="k-123")
                    text = (out.get("choices") or [{}])[0].get("text", "")
                    check(code == 200 and len(text) > 0, "a completion from the installed server: %r" % text)
                    code, out = request(url + "/v1/completions", {"model": "kjv", "prompt": "In the beginning",
                                                                  "max_tokens": 300}, key="k-123")
                    check(code == 400 and out.get("error", {}).get("code") == "context_length_exceeded",
                          "prompt + max_tokens beyond --max-model-len is a 400 context_length_exceeded (%d)" % code)
            finally:
                stop(proc)
        log = open(log_path).read()
        check("kv_cache.memory_fraction 0.05:" in log, "--kv-cache-memory-fraction reached the workers (their log says so)")
        check("resident weights 9.98 MB" in log, "--dtype bfloat16 reached the workers (half the f32 demo's 19.96 MB)")

        # --device reaches the workers: a GPU that no machine has fails their start-up, naming CUDA (no
        # device here; a build without CUDA says so; a GPU machine has no device 999).
        r = subprocess.run([shoal, "up", "--port", "0", "--device", "cuda:999"], cwd=elsewhere, capture_output=True,
                           text=True, timeout=120, env=env)
        check(r.returncode != 0 and "CUDA" in r.stderr and "[worker" in r.stderr,
              "--device cuda:999 reached the workers, which refused it: %s"
              % [l for l in r.stderr.splitlines() if "CUDA" in l][:1])

        # --max-model-len that the KV cache cannot hold: a start-up error naming both numbers.
        small = os.path.join(scratch, "small-kv.yaml")
        with open(small, "w") as f:
            f.write("model:\n  path: %s\nkv_cache:\n  memory_mib: 1\ncluster:\n  ranks_per_group: 1\n"
                    % os.path.join(share, "models", "demo-kjv-moe"))
        r = subprocess.run([shoal, "up", "--config", small, "--port", "0", "--max-model-len", "1024"], cwd=elsewhere,
                           capture_output=True, text=True, timeout=120, env=env)
        check(r.returncode != 0, "shoal up exits non-zero when --max-model-len does not fit the KV cache")
        check("engine.max_model_len (--max-model-len) is 1024 but the KV cache holds" in r.stderr,
              "the error names --max-model-len and what the cache holds")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if FAILURES:
        print("%d check(s) failed" % len(FAILURES))
        sys.exit(1)
    print("all checks passed")


main()
