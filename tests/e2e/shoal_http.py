"""Talking to a shoal server over real HTTP (Python's http.client) in the end-to-end and chaos tests:
plain requests and SSE streams."""
import http.client
import json

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
