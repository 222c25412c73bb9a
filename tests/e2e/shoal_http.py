"""Talking to a shoal server over real HTTP (Python's http.client) in the end-to-end and chaos tests:
plain requests and SSE streams."""
import http.client
import json
import threading
import time

_OWN_KEY = object()  # request(key=...) default: the server's key; key=None sends none


class Server:
    def __init__(self, host, port, key=None):
        self.host, self.port, self.key = host, port, key

    def request(self, method, path, body=None, headers=None, key=_OWN_KEY, raw=None, timeout=60):
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        h = {"Content-Type": "application/json"}
        key = self.key if key is _OWN_KEY else key
        if key:
            h["Authorization"] = "Bearer " + key
        h.update(headers or {})
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        text = r.read().decode("utf-8", "replace")
        c.close()
        try:
            j = json.loads(text) if text else None
        except ValueError:
            j = None
        return r.status, j, text, dict(r.getheaders())

    def stream(self, path, body, on_event=None, timeout=60, on_status=None):
        """POSTs with stream: true; returns (status, list of parsed events, saw_done). on_status(status)
        is called once the response's status line is in (a stream is admitted at 200)."""
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        c.request("POST", path, body=json.dumps(body),
                  headers={"Content-Type": "application/json", **({"Authorization": "Bearer " + self.key} if self.key else {})})
        r = c.getresponse()
        if on_status:
            on_status(r.status)
        if r.status != 200:
            text = r.read().decode()
            c.close()
            return r.status, [json.loads(text)], False
        events, done = [], False
        while True:
            line = r.fp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            payload = line[6:]
            if payload == b"[DONE]":
                done = True
                break
            ev = json.loads(payload)
            events.append(ev)
            if on_event and on_event(ev, c) is False:
                break
        c.close()
        return 200, events, done


def stream_all(server, path, bodies, timeout=180):
    """Streams every body at once, one thread each (started; join them). Returns (threads, status, tokens,
    arrivals, ends), lists filled in as the streams go: each one's HTTP status (200 once admitted), its
    token ids, the arrival time of each chunk with tokens, and its finish_reason ("error: ..." or
    "http N" when it failed)."""
    n = len(bodies)
    status, tokens, arrivals, ends = [None] * n, [[] for _ in range(n)], [[] for _ in range(n)], [None] * n

    def run(i):
        def on_event(ev, _):
            now = time.time()
            for c in ev.get("choices", []):
                if c.get("token_ids"):
                    tokens[i].extend(c["token_ids"])
                    arrivals[i].append(now)
                if c.get("finish_reason"):
                    ends[i] = c["finish_reason"]
            if "error" in ev:
                ends[i] = "error: " + json.dumps(ev["error"])[:200]

        def on_status(st):
            status[i] = st
        st, _, _ = server.stream(path, dict(bodies[i], stream=True), on_event, timeout=timeout, on_status=on_status)
        if st != 200:
            ends[i] = "http %d" % st

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, status, tokens, arrivals, ends
