"""A nasprune server seen from outside: wait until one is ready, or run ``nasprune serve``
as a child process on a free loopback port (what the process tests and benchmarks drive,
the command an operator runs, not an app in the test's own process)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from nasprune.errors import NaspruneError

#: The line ``nasprune serve`` prints once the port is bound and the model loaded.
_ANNOUNCED = re.compile(r"\son\s+(http://\S+:\d+)")


def wait_ready(url: str, token: str | None = None, timeout: float = 30.0, *,
               alive: Callable[[], bool] | None = None) -> None:
    """Block until ``url``/readyz answers 200, or raise a user-facing error.

    ``alive()`` (if given) is asked between tries; once it is false, waiting stops.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise NaspruneError(f"{url} stopped before it was ready ({last})")
        try:
            request = urllib.request.Request(f"{url}/readyz")
            if token:
                request.add_header("Authorization", f"Bearer {token}")
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(0.2)
    raise NaspruneError(f"{url} is not ready after {timeout:.0f} s ({last})")


class ServerProcess:
    """``python -m nasprune serve MODEL_DIR --port 0 OPTIONS...`` in a child process.

    Its output goes to ``log``; the constructor returns once the server announced its
    address and ``/readyz`` answers 200 (``url``, ``address``), and raises
    ``NaspruneError`` with the output if it exits or is not ready within
    ``start_timeout`` seconds. ``stop()`` sends SIGTERM (the drain), then kills.
    """

    def __init__(self, model_dir: str | Path, log: str | Path, *options: str,
                 start_timeout: float = 120.0):
        self.log = Path(log)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("NASPRUNE_TOKEN", None)  # an operator's token must not close the test server
        self.handle = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nasprune", "serve", str(model_dir), "--port", "0",
             *options], env=env, stdout=self.handle, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + start_timeout
            self.url = self._announced(deadline)
            wait_ready(self.url, timeout=max(deadline - time.monotonic(), 0.001),
                       alive=lambda: self.proc.poll() is None)
        except NaspruneError as exc:
            self.stop()
            raise NaspruneError(f"{exc}; server output:\n{self.output()}") from None
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.address = (host.strip("[]"), int(port))

    def _announced(self, deadline: float) -> str:
        while True:
            found = _ANNOUNCED.search(self.output())
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                raise NaspruneError(f"the server exited ({self.proc.returncode}) before it "
                                    "announced its address")
            if time.monotonic() > deadline:
                raise NaspruneError("the server did not announce its address in time")
            time.sleep(0.1)

    def get(self, path: str, timeout: float = 30.0) -> tuple[int, str]:
        """``(status, body)`` of ``GET path``."""
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def metrics(self, timeout: float = 30.0) -> str:
        """The Prometheus text of ``/metrics``."""
        return self.get("/metrics", timeout)[1]

    def alive(self, timeout: float = 10.0) -> bool:
        """``/healthz`` answers 200."""
        try:
            return self.get("/healthz", timeout)[0] == 200
        except (urllib.error.URLError, OSError):
            return False

    def output(self) -> str:
        """Everything the server printed so far."""
        if not self.handle.closed:
            self.handle.flush()
        return self.log.read_text()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, up to ``timeout`` seconds for the drain and exit, then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.handle.close()
