"""HTTP edge cases over raw sockets against a real server: the header limit when the head
arrives in one read, Authorization headers, chunked bodies that declare too much, and JSON
in another Unicode charset."""

from __future__ import annotations

import json
import socket
import time

import pytest
from test_serve import _metric, make_tiny_classifier

from nasprune.deploy.serve.app import create_app
from nasprune.deploy.serve.config import ServeConfig
from nasprune.deploy.serve.predictor import Predictor
from nasprune.deploy.serve.runner import serve_in_thread

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    return Predictor.from_dir(make_tiny_classifier(tmp_path_factory.mktemp("t") / "m"),
                              max_length=32)


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _exchange(url: str, data: bytes, timeout: float = 10) -> tuple[bytes, float]:
    """The server's whole answer to ``data`` (sent in one write) and how long it took."""
    with socket.create_connection(_address(url)) as s:
        started = time.monotonic()
        s.sendall(data)
        s.settimeout(timeout)
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and b"connection: close" not in answer.lower():
                    head, _, rest = answer.partition(b"\r\n\r\n")
                    length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")]
                    if length and len(rest) >= length[0]:
                        break
        except (ConnectionResetError, socket.timeout):
            pass
        return answer, time.monotonic() - started


@pytest.mark.parametrize("size", [33_000, 100_000])
def test_a_large_head_in_one_read_gets_431(predictor, size):
    app = create_app(predictor, ServeConfig(max_header_bytes=32_768))
    head = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * size + b"\r\n\r\n")
    with serve_in_thread(app) as url:
        answer, _ = _exchange(url, head)
        small, _ = _exchange(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-F: "
                             + b"a" * 30_000 + b"\r\n\r\n")
        text = httpx.get(f"{url}/metrics").text
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert small.startswith(b"HTTP/1.1 200"), small[:200]
    assert _metric(text, 'nasprune_connections_closed_total{reason="header_too_large"}') == 1


def _predict(token_headers: bytes) -> bytes:
    body = b'{"text": "good"}'
    return (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + token_headers + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            + body)


def test_authorization_headers(predictor):
    app = create_app(predictor, ServeConfig(token="s3cret"))
    with serve_in_thread(app) as url:
        twice, _ = _exchange(url, _predict(b"Authorization: Bearer wrong\r\n"
                                           b"Authorization: Bearer s3cret\r\n"))
        lower, _ = _exchange(url, _predict(b"Authorization: bearer s3cret\r\n"))
        upper, _ = _exchange(url, _predict(b"Authorization: BEARER   s3cret\r\n"))
        wrong, _ = _exchange(url, _predict(b"Authorization: bearer s3cre\r\n"))
        basic, _ = _exchange(url, _predict(b"Authorization: Basic s3cret\r\n"))
    assert twice.startswith(b"HTTP/1.1 400") and b"more than one Authorization" in twice
    assert lower.startswith(b"HTTP/1.1 200"), lower
    assert upper.startswith(b"HTTP/1.1 200"), upper
    assert wrong.startswith(b"HTTP/1.1 401") and basic.startswith(b"HTTP/1.1 401")


@pytest.mark.parametrize("chunks", [
    b"FFFFFFFFFF\r\n{\"text\"",  # one huge chunk, announced at once
    b"10\r\n{\"text\": \"good\",\r\n" + b"F4240\r\n  ",  # a small one, then 1 MB
])
def test_a_chunked_body_declaring_too_much_gets_413_at_once(predictor, chunks):
    app = create_app(predictor, ServeConfig(max_body_bytes=1000, body_timeout_s=30))
    request = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
    with serve_in_thread(app) as url:
        answer, took = _exchange(url, request, timeout=20)
        ok, _ = _exchange(url, b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
                          b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"10\r\n{\"text\": \"good\"}\r\n0\r\n\r\n")
        time.sleep(0.2)
        text = httpx.get(f"{url}/metrics").text
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert took < 2, took
    assert ok.startswith(b"HTTP/1.1 200"), ok
    assert _metric(text, 'nasprune_requests_total{path="/v1/predict",status="413"}') == 1
    assert _metric(text, 'nasprune_connections_closed_total{reason="body_too_large"}') == 1


@pytest.mark.parametrize("charset", ["utf-16", "UTF-16LE", "utf-32", "utf-8"])
def test_json_in_a_unicode_charset_is_decoded(predictor, charset):
    app = create_app(predictor, ServeConfig())
    body = json.dumps({"text": "good fun"}).encode(charset)
    with serve_in_thread(app) as url:
        answer = httpx.post(f"{url}/v1/predict", content=body, headers={
            "content-type": f"application/json; charset={charset}"})
        plain = httpx.post(f"{url}/v1/predict", json={"text": "good fun"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == plain.json()


def test_json_in_another_charset_is_415(predictor):
    app = create_app(predictor, ServeConfig())
    with serve_in_thread(app) as url:
        latin = httpx.post(f"{url}/v1/predict", content=b'{"text": "good"}',
                           headers={"content-type": "application/json; charset=latin-1"})
        unknown = httpx.post(f"{url}/v1/predict", content=b'{"text": "good"}',
                             headers={"content-type": "application/json; charset=klingon"})
        broken = httpx.post(f"{url}/v1/predict", content=b'{"text": "\xff',
                            headers={"content-type": "application/json; charset=utf-16-le"})
    assert latin.status_code == 415 and "charset" in latin.json()["detail"]
    assert unknown.status_code == 415
    assert broken.status_code in (400, 422)
