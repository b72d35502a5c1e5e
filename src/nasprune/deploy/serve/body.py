"""Reading a request body without trusting the client: declared JSON, a size limit, a
deadline for the whole upload, and an end when shutdown begins or the client goes away.
Every error answer closes the connection, since the rest of the body is left unread."""

from __future__ import annotations

import asyncio
import math

from nasprune.deploy.serve.batcher import ClientClosed

#: The charsets a JSON body may declare (RFC 7159 section 8.1; Python codec names).
CHARSETS = ("utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be")


def _charset(request) -> str:
    """The declared charset of the body as a Python codec name (``utf-8`` if none)."""
    import codecs

    for param in request.headers.get("content-type", "").split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            name = value.strip().strip('"').lower()
            try:
                return codecs.lookup(name).name
            except LookupError:
                return name
    return "utf-8"


def require_json(request) -> None:
    """415 unless the body is declared JSON (a web page may POST text/plain cross-site)
    in a Unicode charset (UTF-8, -16 or -32)."""
    from fastapi import HTTPException

    declared = request.headers.get("content-type", "")
    if declared.split(";", 1)[0].strip().lower() != "application/json":
        raise HTTPException(415, detail="Content-Type must be application/json")
    if _charset(request) not in CHARSETS:
        raise HTTPException(415, detail=f"unsupported charset {_charset(request)!r}: JSON "
                            "must be UTF-8, UTF-16 or UTF-32")


async def disconnected(receive) -> None:
    """Returns once the client has gone (to be called after the body is read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class _Draining(Exception):
    pass


async def _receive_until(receive, timeout: float, draining: asyncio.Event | None):
    """The next ASGI message, ``None`` after ``timeout`` s, ``_Draining`` once draining."""
    received = asyncio.ensure_future(receive())
    waiters = {received}
    stop = None
    if draining is not None:
        stop = asyncio.ensure_future(draining.wait())
        waiters.add(stop)
    try:
        await asyncio.wait(waiters, timeout=timeout if math.isfinite(timeout) else None,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            if not waiter.done():
                waiter.cancel()
    if received.done() and not received.cancelled():
        return received.result()
    if stop is not None and stop.done():
        raise _Draining
    return None


async def read_body(request, limit: int, timeout: float = math.inf,
                     draining: asyncio.Event | None = None) -> bytes | str:
    """The request body within ``timeout`` seconds: bytes when UTF-8, else the text
    decoded from the declared charset (400 when it is not valid in it).

    413 as soon as it is known to exceed ``limit`` bytes, 408 when it is not complete in
    time, 503 when shutdown begins during the upload, ``ClientClosed`` when the client
    goes away. Every error answer closes the connection (the rest of the body is unread).
    """
    from fastapi import HTTPException

    close = {"Connection": "close"}
    too_big = HTTPException(413, detail=f"request body larger than {limit} bytes",
                            headers=close)
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_big
        except ValueError:
            raise HTTPException(400, detail="bad Content-Length", headers=close) from None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    body = bytearray()
    while True:
        try:
            message = await _receive_until(request.receive, deadline - loop.time(), draining)
        except _Draining:
            raise HTTPException(503, detail="server is shutting down",
                                headers={**close, "Retry-After": "1"}) from None
        if message is None:
            raise HTTPException(408, detail=f"request body not received within {timeout:g} s",
                                headers=close)
        if message["type"] == "http.disconnect":
            raise ClientClosed(f"the client closed the connection during the upload "
                               f"({len(body)} bytes received)")
        body += message.get("body", b"")
        if len(body) > limit:
            raise too_big
        if not message.get("more_body", False):
            charset = _charset(request)
            if charset == "utf-8":
                return bytes(body)
            try:
                return bytes(body).decode(charset).removeprefix("\ufeff")
            except UnicodeDecodeError:
                raise HTTPException(400, detail=f"the body is not valid {charset}",
                                    headers=close) from None
