#!/usr/bin/env python3
"""Checks a running coordinator over HTTP from another host: /v1/cluster shows the group with its
ranks on the expected hosts, and every prompt of the fixture gets transformers' greedy tokens.

  check_serving.py URL FIXTURE_DIR GROUP HOST,HOST,... [API_KEY]

HOSTS lists the host name each rank (0, 1, ...) reports, in rank order; "*" accepts any.
Prints one "ok" line per check; exits 1 with the reason on the first failure.
"""
import http.client
import json
import sys


def main():
    url, fixture, group, hosts = sys.argv[1:5]
    key = sys.argv[5] if len(sys.argv) > 5 else None
    want_hosts = hosts.split(",")
    host, port = url[len("http://"):].rstrip("/").rsplit(":", 1)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key

    def req(method, path, body=None):
        c = http.client.HTTPConnection(host, int(port), timeout=120)
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, json.loads(data or b"null")

    st, j = req("GET", "/v1/cluster")
    if st != 200:
        sys.exit(f"FAIL /v1/cluster: HTTP {st}: {j}")
    groups = [g for g in j["groups"] if g["name"] == group]
    if not groups:
        sys.exit(f"FAIL /v1/cluster has no group {group}: {j}")
    ranks = sorted(groups[0]["ranks"], key=lambda r: r["rank"])
    got_hosts = [r.get("host") for r in ranks]
    if len(ranks) != len(want_hosts) or any(w != "*" and w != g for w, g in zip(want_hosts, got_hosts)):
        sys.exit(f"FAIL group {group}: ranks on {got_hosts}, expected {want_hosts}")
    print(f"ok   /v1/cluster: group {group}, ranks on {', '.join(got_hosts)}")

    for i, p in enumerate(json.load(open(fixture + "/expected.json"))["prompts"]):
        st, j = req("POST", "/v1/completions",
                    {"prompt": p["prompt_ids"], "max_tokens": len(p["greedy_tokens"]), "temperature": 0,
                     "ignore_eos": True, "return_token_ids": True})
        if st != 200 or j["choices"][0]["token_ids"] != p["greedy_tokens"]:
            sys.exit(f"FAIL prompt {i}: HTTP {st}: {j}, expected tokens {p['greedy_tokens']}")
    print(f"ok   {fixture.rstrip('/').rsplit('/', 1)[-1]}: greedy tokens of every prompt equal transformers'")


if __name__ == "__main__":
    main()
