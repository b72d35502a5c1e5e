"""1. fuzz: hundreds of hostile requests over raw sockets; no answer may be 5xx."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.reliability.shared import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    Server,
    exchange,
    tracebacks,
)


def fuzz_cases(rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    """``n`` hostile requests, each ``(kind, raw bytes)``; seeded."""
    deep = 100_000
    bodies: list[tuple[str, bytes]] = [
        ("valid text", b'{"text": "good movie"}'),
        ("valid texts", b'{"texts": ["good", "bad movie", "the plot"]}'),
        ("valid pair", b'{"text": "good", "text_pair": "bad"}'),
        ("valid inputs pairs", b'{"inputs": [["a", "b"], "c"]}'),
        ("unicode texts", json.dumps({"texts": ["\u202eevil", "\u0301\u0301", "\U0001f600",
                                                "\x00\x01\x1f", "\u200b"]}).encode()),
        ("control chars raw", b'{"text": "a\x00b\x07c"}'),
        ("empty body", b""),
        ("whitespace", b"  \n\t "),
        ("null", b"null"),
        ("list", b"[]"),
        ("string", b'"good"'),
        ("number", b"1e999999"),
        ("NaN", b'{"text": NaN}'),
        ("Infinity", b'{"texts": [Infinity]}'),
        ("big int", b'{"text": ' + b"9" * 5000 + b"}"),
        ("truncated", b'{"text": "good'),
        ("trailing garbage", b'{"text": "good"} xyz'),
        ("single quotes", b"{'text': 'good'}"),
        ("invalid utf-8", b'{"text": "\xff\xfe\xfa"}'),
        ("overlong utf-8", b'{"text": "\xc0\xaf\xe0\x80\xaf"}'),
        ("utf-16 body", '{"text": "good"}'.encode("utf-16")),
        ("bom", b'\xef\xbb\xbf{"text": "good"}'),
        ("lone surrogate", b'{"text": "\\ud800"}'),
        ("surrogate pair escape", b'{"text": "\\ud83d\\ude00"}'),
        ("escaped null", b'{"text": "\\u0000"}'),
        ("text int", b'{"text": 5}'),
        ("text dict", b'{"text": {"a": 1}}'),
        ("text bool", b'{"text": true}'),
        ("text null", b'{"text": null}'),
        ("empty text", b'{"text": ""}'),
        ("texts empty", b'{"texts": []}'),
        ("texts ints", b'{"texts": [1, 2, null]}'),
        ("texts triple", b'{"texts": [["a", "b", "c"]]}'),
        ("texts nested pairs", b'{"texts": [[["a"], "b"]]}'),
        ("pair without text", b'{"text_pair": "b"}'),
        ("two forms", b'{"text": "a", "texts": ["b"]}'),
        ("extra key", b'{"text": "a", "debug": true}'),
        ("duplicate keys", b'{"text": "a", "text": 5}'),
        ("65 items", json.dumps({"texts": ["a"] * 65}).encode()),
        ("10000 items", json.dumps({"texts": ["a"] * 10_000}).encode()),
        ("text too long", json.dumps({"text": "a" * 20_001}).encode()),
        ("longest text", json.dumps({"text": "good " * 3999}).encode()),
        ("64 long texts", json.dumps({"texts": ["bad " * 2000] * 64}).encode()),
        ("over the body limit", json.dumps({"texts": ["a" * 19_000] * 60}).encode()),
        ("nested lists", b'{"text": ' + b"[" * deep + b"]" * deep + b"}"),
        ("nested objects", b'{"texts": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}"),
        ("deep array", b"[" * deep),
        ("random bytes", bytes(random.Random(7).getrandbits(8) for _ in range(3000))),
        ("form encoded", b"text=good&texts=bad"),
        ("multipart", b'--x\r\nContent-Disposition: form-data; name="text"\r\n\r\ngood\r\n--x--'),
    ]
    methods = ["POST"] * 6 + ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE",
                              "CONNECT", "post", "FOO", "P" * 300, "GET /x"]
    paths = ["/v1/predict"] * 8 + [
        "/v1/predict/", "/v1/predict?x=1&x=2", "//v1//predict", "/v1/predict%2F",
        "/v1/model", "/metrics", "/healthz", "/readyz", "/docs", "/openapi.json", "/",
        "/../../etc/passwd", "/%00", "/%ff%fe", "/v1/predict#frag", "*",
        "http://evil.example/v1/predict", "/" + "a" * 9000, "/v1/\xe9t\xe9",
        "/v1/predict;params", "/V1/PREDICT"]
    types = ["application/json"] * 6 + [
        "application/json; charset=utf-8", "APPLICATION/JSON", "application/json; charset=latin-1",
        "text/plain", "text/html", "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x", "application/json-patch+json", "*/*", "", None,
        "application/json\x00", "a" * 5000]
    hosts = ["127.0.0.1", "evil.example", "", "a" * 3000, "[::1]:99999", "127.0.0.1:0", None]
    extras = [
        [], [], [], [("Authorization", "Bearer x")], [("Authorization", "Basic \xff\xff")],
        [("Expect", "100-continue")], [("X-Forwarded-Host", "evil.example")],
        [("Accept-Encoding", "gzip, br")], [("Content-Encoding", "gzip")],
        [("X-Big", "b" * 40_000)], [(f"X-H{i}", "v") for i in range(200)],
        [("Bad Header", "v")], [("X-Null", "a\x00b")], [("\xff\xfe", "v")],
        [("X-Fold", "a\r\n folded")], [("Connection", "keep-alive, Upgrade"),
                                        ("Upgrade", "websocket")],
        [("Transfer-Encoding", "gzip")], [("Cookie", "a=" + "c" * 8000)]]
    versions = ["HTTP/1.1"] * 10 + ["HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1.1", "HTP/1.1",
                                    "HTTP/9"]

    def request(method, path, version, headers, body, framing) -> bytes:
        lines = [f"{method} {path} {version}"]
        for k, v in headers:
            lines.append(f"{k}: {v}")
        if framing == "length":
            lines.append(f"Content-Length: {len(body)}")
        elif framing == "short length":
            lines.append(f"Content-Length: {max(0, len(body) - 5)}")
        elif framing == "long length":
            lines.append(f"Content-Length: {len(body) + 7}")
        elif framing == "bad length":
            lines.append(rng.choice(["Content-Length: abc", "Content-Length: -1",
                                     "Content-Length: 1e3", "Content-Length: 99999999999999"]))
        elif framing == "two lengths":
            lines += [f"Content-Length: {len(body)}", f"Content-Length: {len(body) + 1}"]
        elif framing == "chunked":
            lines.append("Transfer-Encoding: chunked")
            body = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n"
                            for part in (body[:7], body[7:]) if part) + b"0\r\n\r\n"
        elif framing == "bad chunked":
            lines.append("Transfer-Encoding: chunked")
            body = b"zz\r\n" + body + b"\r\n"
        elif framing == "length and chunked":
            lines += [f"Content-Length: {len(body)}", "Transfer-Encoding: chunked"]
        lines.append("Connection: close")
        head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
        return head + b"\r\n\r\n" + body

    framings = ["length"] * 12 + ["none", "short length", "long length", "bad length",
                                  "two lengths", "chunked", "bad chunked", "length and chunked"]
    cases: list[tuple[str, bytes]] = []
    # every body once as a well-formed POST (one per kind), the rest drawn at random
    for kind, body in bodies:
        cases.append((f"body: {kind}", request("POST", "/v1/predict", "HTTP/1.1",
                                               [("Host", "127.0.0.1"),
                                                ("Content-Type", "application/json")],
                                               body, "length")))
    raw = [
        ("garbage line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40),
        ("http/0.9", b"GET /\r\n\r\n"),
        ("no version", b"GET /healthz\r\n\r\n"),
        ("bare newline", b"GET /healthz HTTP/1.1\nHost: x\n\n"),
        ("only CRLF", b"\r\n\r\n\r\n"),
        ("header without colon", b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n"),
        ("space before colon", b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n"),
        ("pipelined", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3
         + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("smuggling", b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
         b"\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /metrics "
         b"HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("null in request line", b"GET /hea\x00lthz HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("huge request line", b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n"),
        ("utf-8 method", "GÉT / HTTP/1.1\r\n\r\n".encode()),
    ]
    cases += [(f"raw: {kind}", data) for kind, data in raw]
    # the rest: a random body in a well-formed POST with one to three of its parts made
    # hostile (so that most reach the application, not only the HTTP parser)
    normal = {"method": "POST", "path": "/v1/predict", "version": "HTTP/1.1",
              "host": "127.0.0.1", "type": "application/json", "extra": [],
              "framing": "length"}
    choices = {"method": methods, "path": paths, "version": versions, "host": hosts,
               "type": types, "extra": extras, "framing": framings}
    while len(cases) < n:
        kind, body = rng.choice(bodies)
        parts = dict(normal)
        for part in rng.sample(sorted(choices), rng.randint(1, 3)):
            parts[part] = rng.choice(choices[part])
        headers = [] if parts["host"] is None else [("Host", parts["host"])]
        if parts["type"] is not None:
            headers.append(("Content-Type", parts["type"]))
        headers += parts["extra"]
        changed = ", ".join(f"{k}={str(v)[:20]!r}" for k, v in parts.items() if v != normal[k])
        cases.append((f"random: {kind}; {changed}",
                      request(parts["method"], parts["path"], parts["version"], headers, body,
                              parts["framing"])))
    return cases


def run_fuzz(model_dir: Path, work: Path, n: int, seed: int) -> tuple[dict, dict]:
    cases = fuzz_cases(random.Random(seed), n)
    server = Server(model_dir, work / "fuzz-server.log",
                    "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
                    "--max-queue", "64")
    try:
        def one(case):
            kind, data = case
            try:
                return kind, exchange(server.address, data)
            except OSError as exc:
                return kind, f"connection error: {type(exc).__name__}"

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, cases))
        alive = server.alive()
        text = server.metrics()
        output = server.output()
    finally:
        server.stop()
    statuses: dict[str, int] = {}
    for _, status in answers:
        key = str(status) if status is not None else "closed without answer"
        statuses[key] = statuses.get(key, 0) + 1
    fives = [(k, s) for k, s in answers if isinstance(s, int) and s >= 500]
    server_500 = sum(float(line.split()[-1]) for line in text.splitlines()
                     if line.startswith("nasprune_requests_total") and 'status="5' in line)
    detail = {"statuses": dict(sorted(statuses.items())), "five_xx_cases": fives[:20],
              "alive_after": alive, "server_tracebacks": tracebacks(output),
              "server_counted_5xx": server_500}
    return {"requests": len(cases), "status_5xx": len(fives)}, detail
