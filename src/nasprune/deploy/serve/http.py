"""Connection-level protection for ``nasprune serve``: what uvicorn does not bound itself.

- ``bind_socket``: the listening socket is bound before the model loads, so a bad or busy
  address is one line at once instead of a traceback after loading.
- ``guarded_protocol``: uvicorn's HTTP protocol plus a header deadline (a connection must
  deliver a complete request head within ``header_timeout`` of opening or of its previous
  response, else it is closed), a header size limit (counted up to the end of the head, also
  when the whole head arrives in one read), a chunked body that declares more than
  ``max_body_bytes`` answered 413 as soon as the chunk size is read, and a cap on open
  connections (connections beyond it get 503 and are closed at once).
- ``DrainingServer``: on SIGINT/SIGTERM, uploads still in progress are cut (503), running
  requests get ``drain_timeout`` seconds to finish, and whatever is left is cancelled.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import re
import socket
from collections.abc import Callable

from nasprune.errors import NaspruneError

_log = logging.getLogger("nasprune.deploy.serve")

_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def check_host(host: str) -> None:
    """An IP address or a syntactically valid host name; ``NaspruneError`` otherwise."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if (not host or len(host) > 253 or not all(_LABEL.fullmatch(part) for part in labels)
            or labels[-1].isdigit()):  # 256.1.1.1 is a bad address, not a host name
        raise NaspruneError(f"--host {host!r} is not an IP address or a host name")


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening), or one clear error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise NaspruneError(f"--host {host!r}: cannot resolve it ({exc})") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first, as uvicorn does
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        where = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise NaspruneError(f"{where} is already in use (another server?); "
                                "choose another --port") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise NaspruneError(f"cannot listen on {host!r}: not an address of this "
                                "machine") from None
        if exc.errno == errno.EACCES:
            raise NaspruneError(f"not allowed to listen on {where} (ports below 1024 need "
                                "privileges)") from None
        raise NaspruneError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def raise_open_file_limit(connections: int) -> None:
    """Make room for ``connections`` sockets plus the process's own files, if allowed."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 128
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            raise NaspruneError(f"--max-connections {connections} needs about {wanted} open "
                                f"files, but this process may open only {hard} (ulimit -n)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _raw_response(status: int, reason: str) -> bytes:
    retry = "retry-after: 1\r\n" if status == 503 else ""
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(reason)}\r\n{retry}connection: close\r\n\r\n"
            f"{reason}").encode()


class _ChunkSizes:
    """Follows the framing of a chunked body as it arrives, only to add up the chunk sizes
    it declares (uvicorn's parser decodes the body; this one only counts)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.declared = 0
        self.line = b""
        self.skip = 0  # bytes of chunk data (and its CRLF) still to pass over
        self.done = False

    def feed(self, data: bytes) -> bool:
        """False as soon as the declared sizes exceed ``limit``."""
        i = 0
        while i < len(data) and not self.done:
            if self.skip:
                step = min(self.skip, len(data) - i)
                self.skip -= step
                i += step
                continue
            newline = data.find(b"\n", i)
            self.line += data[i:] if newline < 0 else data[i:newline]
            if newline < 0 or len(self.line) > 1024:  # a malformed line: the parser says so
                self.done = len(self.line) > 1024
                return True
            i = newline + 1
            try:
                size = int(self.line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.done = True  # not a size line: uvicorn's parser answers 400
                return True
            self.line = b""
            if size == 0:
                self.done = True
                return True
            self.declared += size
            if self.declared > self.limit:
                return False
            self.skip = size + 2
        return True


class _ConnectionGuard:
    """Mixed into uvicorn's HTTP protocol class (httptools or h11, whichever it uses).

    Only ``connection_made``, ``data_received``, ``on_response_complete``,
    ``connection_lost`` and the attributes ``cycle``, ``transport``, ``loop`` and
    ``connections`` of uvicorn's protocols are relied on. A request head is complete when
    the protocol has created a new request cycle.
    """

    header_timeout: float = 10.0
    max_header_bytes: int = 32_768
    max_body_bytes: int = 1_000_000
    max_connections: int = 512
    on_close: Callable[[str], None] = staticmethod(lambda reason: None)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._guard_timer: asyncio.TimerHandle | None = None
        self._guard_cycle = None
        self._guard_bytes = 0
        self._guard_tail = b""
        self._guard_chunks: _ChunkSizes | None = None
        if len(self.connections) > self.max_connections:  # type: ignore[attr-defined]
            self._guard_close("max_connections", 503, "Service Unavailable")
            return
        self._guard_arm()

    def _guard_arm(self) -> None:
        self._guard_cancel()
        self._guard_cycle = self.cycle  # type: ignore[attr-defined]
        self._guard_bytes = 0
        self._guard_tail = b""
        self._guard_chunks = None
        self._guard_timer = self.loop.call_later(  # type: ignore[attr-defined]
            self.header_timeout, self._guard_expired)

    def _guard_cancel(self) -> None:
        if getattr(self, "_guard_timer", None) is not None:
            self._guard_timer.cancel()
            self._guard_timer = None

    def data_received(self, data: bytes) -> None:
        waiting = self._guard_timer is not None
        end = None  # where the request head ends in ``data``
        if waiting:
            found = (self._guard_tail + data).find(b"\r\n\r\n")
            end = found + 4 - len(self._guard_tail) if found >= 0 else None
            head = self._guard_bytes + (len(data) if end is None else end)
            if head > self.max_header_bytes:
                self._guard_close("header_too_large", 431, "Request Header Fields Too Large")
                return
            self._guard_bytes = head
            self._guard_tail = (self._guard_tail + data)[-3:]
        elif self._guard_chunks is not None and not self._guard_chunks.feed(data):
            self._body_too_large()
            return
        super().data_received(data)  # type: ignore[misc]
        if not waiting or self.transport.is_closing():  # type: ignore[attr-defined]
            return
        if self.cycle is not self._guard_cycle:  # type: ignore[attr-defined]
            self._guard_cancel()  # a complete request head arrived in time
            if _chunked(self.cycle.scope):  # type: ignore[attr-defined]
                self._guard_chunks = _ChunkSizes(self.max_body_bytes)
                if not self._guard_chunks.feed(data[end or len(data):]):
                    self._body_too_large()

    def _body_too_large(self) -> None:
        self.cycle.scope["nasprune.status"] = 413  # type: ignore[attr-defined]
        self._guard_close("body_too_large", 413, "Content Too Large")

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():  # type: ignore[attr-defined]
            self._guard_arm()  # the next request head must come in time, too

    def connection_lost(self, exc) -> None:
        self._guard_cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def _guard_expired(self) -> None:
        self._guard_timer = None
        cycle = self.cycle  # type: ignore[attr-defined]
        idle = cycle is None or cycle.response_complete
        if cycle is self._guard_cycle and idle and not self.transport.is_closing():  # type: ignore[attr-defined]
            if self._guard_bytes:
                self._guard_close("header_timeout", 408, "Request Timeout")
            else:
                self._guard_close("header_timeout")

    def _guard_close(self, reason: str, status: int | None = None, text: str = "") -> None:
        self._guard_cancel()
        transport = self.transport  # type: ignore[attr-defined]
        if status is not None:
            transport.write(_raw_response(status, text))
        transport.close()
        self.on_close(reason)


def _chunked(scope) -> bool:
    return any(name == b"transfer-encoding" and b"chunked" in value.lower()
               for name, value in scope.get("headers", ()))


def guarded_protocol(*, header_timeout: float, max_header_bytes: int, max_connections: int,
                     max_body_bytes: int = 1_000_000,
                     on_close: Callable[[str], None] | None = None) -> type:
    """uvicorn's HTTP protocol class (httptools if installed, else h11) with the guard."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    attrs = {"header_timeout": header_timeout, "max_header_bytes": max_header_bytes,
             "max_body_bytes": max_body_bytes, "max_connections": max_connections}
    if on_close is not None:
        attrs["on_close"] = staticmethod(on_close)
    return type("NaspruneHTTPProtocol", (_ConnectionGuard, AutoHTTPProtocol), attrs)


def draining_server_class():
    """A ``uvicorn.Server`` that tells the app when shutdown begins (``on_drain``)."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        on_drain: Callable[[], None] | None = None

        async def shutdown(self, sockets=None) -> None:
            if self.on_drain is not None:
                self.on_drain()
            await super().shutdown(sockets=sockets)

    return DrainingServer
