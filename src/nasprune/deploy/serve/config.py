"""``nasprune serve``'s settings, every one checked before anything is loaded."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from nasprune.config import check_device_name
from nasprune.deploy.serve.http import check_host
from nasprune.errors import NaspruneError

#: uvicorn's log levels, the accepted values of ``--log-level``.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@dataclass
class ServeConfig:
    """Everything ``nasprune serve`` takes besides the model directory.

    Every value is checked here, before anything is loaded; a bad one is a
    ``NaspruneError`` naming the command-line option.
    """

    host: str = "127.0.0.1"
    port: int = 8000  # 0 = any free port
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256  # requests waiting; beyond this the server answers 503
    token: str | None = None  # bearer token for /v1/* and /metrics; None = open
    max_body_bytes: int = 1_000_000
    max_items: int = 64  # texts (or pairs) per request
    max_text_chars: int = 20_000  # per text, before tokenisation
    max_length: int = 128  # tokens; longer inputs are truncated
    chunk_size: int = 8  # a batch runs length-sorted in chunks of this many (less padding)
    torch_threads: int | None = None  # None = leave torch's default
    device: str = "cpu"  # auto, cpu, cuda, cuda:N, mps: where the model runs
    retry_after_s: int = 1
    log_level: str = "warning"
    request_timeout_s: float = 10.0  # queue + model once the body is in; 503 beyond
    header_timeout_s: float = 10.0  # request line + headers, from connect / last response
    body_timeout_s: float = 30.0  # the whole body, from the end of the headers; 408 beyond
    keep_alive_s: float = 5.0  # an idle kept-alive connection is closed after this
    drain_timeout_s: float = 5.0  # on SIGINT/SIGTERM, running requests get this long
    max_connections: int = 512  # open connections; more are answered 503 and closed
    max_header_bytes: int = 32_768  # request line + headers

    def __post_init__(self) -> None:
        def positive(value, option: str, *, integer: bool = True, minimum: float = 1) -> None:
            kind = int if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind) or value < minimum or (
                    not integer and not math.isfinite(value)):
                what = "an integer" if integer else "a number"
                raise NaspruneError(f"{option} must be {what} >= {minimum:g}, got {value!r}")

        if isinstance(self.port, bool) or not isinstance(self.port, int) or \
                not 0 <= self.port <= 65535:
            raise NaspruneError(f"--port must be 0..65535 (0 = any free port), got {self.port!r}")
        check_host(self.host)
        positive(self.max_batch_size, "--max-batch-size")
        positive(self.max_wait_ms, "--max-wait-ms", integer=False, minimum=0)
        positive(self.max_queue, "--max-queue")
        positive(self.max_body_bytes, "--max-body-bytes")
        positive(self.max_items, "--max-items")
        positive(self.max_text_chars, "--max-text-chars")
        positive(self.max_length, "--max-length", minimum=2)
        positive(self.chunk_size, "--chunk-size")
        if self.torch_threads is not None:
            positive(self.torch_threads, "--threads")
        positive(self.retry_after_s, "retry_after_s", minimum=0)
        check_device_name(self.device)
        for value, option in ((self.request_timeout_s, "--request-timeout"),
                              (self.header_timeout_s, "--header-timeout"),
                              (self.body_timeout_s, "--body-timeout"),
                              (self.keep_alive_s, "--keep-alive"),
                              (self.drain_timeout_s, "--drain-timeout")):
            positive(value, option, integer=False, minimum=0.001)
        positive(self.max_connections, "--max-connections")
        positive(self.max_header_bytes, "--max-header-bytes", minimum=1024)
        level = str(self.log_level).lower()
        if level not in LOG_LEVELS:
            raise NaspruneError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, "
                                f"got {self.log_level!r}")
        self.log_level = level
        if self.token == "":
            self.token = None

    def public_dict(self) -> dict:
        """The configuration without the secret."""
        data = asdict(self)
        data["token"] = "set" if self.token else None
        return data
