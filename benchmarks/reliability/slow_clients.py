"""3. slow clients: connections that never finish are closed within the timeouts."""

from __future__ import annotations

import selectors
import socket
import time
from pathlib import Path

from benchmarks.reliability.shared import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    Server,
    metric,
    tracebacks,
)


def run_slow_clients(model_dir: Path, work: Path, n: int) -> tuple[dict, dict]:
    server = Server(model_dir, work / "slow-server.log", "--header-timeout", str(HEADER_TIMEOUT),
                    "--body-timeout", str(BODY_TIMEOUT))
    head = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    kinds = {  # kind -> (sent at once, dripped one byte per tick)
        "silent": (b"", b""),
        "partial headers": (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Ty", b""),
        "partial body": (head + b'{"text": "go', b""),
        "header drip": (b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Drip: " + b"a" * 10_000),
        "body drip": (head, b'{"text": "' + b"a" * 10_000),
    }
    try:
        files_before = server.open_files()
        socks: dict[socket.socket, str] = {}
        drips: dict[socket.socket, bytes] = {}
        started = time.monotonic()
        for i in range(n):
            kind = list(kinds)[i % len(kinds)]
            sock = socket.create_connection(server.address)
            sock.sendall(kinds[kind][0])
            socks[sock] = kind
            if kinds[kind][1]:
                drips[sock] = kinds[kind][1]
        opened = time.monotonic() - started
        selector = selectors.DefaultSelector()
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        closed_at: dict[str, list[float]] = {kind: [] for kind in kinds}
        limit = max(HEADER_TIMEOUT, BODY_TIMEOUT) + 15
        offset = 0
        peak_files = server.open_files()
        try:
            while selector.get_map() and time.monotonic() - started < limit:
                for sock, text in drips.items():  # one byte each, every 0.1 s
                    if sock in selector.get_map():
                        try:
                            sock.send(text[offset:offset + 1])
                        except OSError:
                            pass
                offset += 1
                for key, _ in selector.select(timeout=0.1):
                    try:
                        while True:
                            data = key.fileobj.recv(65536)
                            if not data:
                                break
                    except BlockingIOError:
                        continue  # data (a 408) came, the close not yet
                    except OSError:
                        pass  # reset: closed by the server
                    closed_at[socks[key.fileobj]].append(time.monotonic() - started)
                    selector.unregister(key.fileobj)
                if offset % 10 == 0:
                    peak_files = max(peak_files, server.open_files())
            still_open = len(selector.get_map())
        finally:
            for sock in socks:
                sock.close()
        time.sleep(0.5)
        files_after = server.open_files()
        text = server.metrics()
        alive = server.alive()
        output = server.output()
    finally:
        server.stop()
    last = max((t for times in closed_at.values() for t in times), default=None)
    figures = {"connections": n,
               "all_closed_within_s": round(last, 2) if last is not None and not still_open
               else None}
    detail = {"by_kind": {k: {"connections": sum(1 for v in socks.values() if v == k),
                              "closed": len(v), "last_closed_s": round(max(v), 2) if v else None}
                          for k, v in closed_at.items()},
              "still_open_at_limit": still_open, "opened_in_s": round(opened, 3),
              "header_timeout_s": HEADER_TIMEOUT, "body_timeout_s": BODY_TIMEOUT,
              "open_files": {"before": files_before, "peak": peak_files, "after": files_after},
              "closed_by_header_timeout": metric(
                  text, 'nasprune_connections_closed_total{reason="header_timeout"}'),
              "answered_408": metric(
                  text, 'nasprune_requests_total{path="/v1/predict",status="408"}'),
              "alive_after": alive, "server_tracebacks": tracebacks(output)}
    return figures, detail
