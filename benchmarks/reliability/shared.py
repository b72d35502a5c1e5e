"""What the reliability checks share: the server as a child process, raw-socket exchanges,
Prometheus figures, and the tiny and medium exports they serve."""

from __future__ import annotations

import os
import random
import re
import socket
import sys
from pathlib import Path

from tests.cases import WORDS, metric  # noqa: F401 (re-exported for the checks)

from nasprune.deploy.serve.process import ServerProcess

os.environ.setdefault("HF_HUB_OFFLINE", "1")
NASPRUNE = str(Path(sys.executable).parent / "nasprune")
HEADER_TIMEOUT, BODY_TIMEOUT = 2.0, 3.0  # the fuzz/slow-client server's timeouts


def env() -> dict:
    out = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    out.pop("NASPRUNE_TOKEN", None)
    return out


class Server(ServerProcess):
    """``nasprune serve DIR --port 0 --threads 1 ...`` as a child process, with its RSS and
    open files (``/proc``); its output in a log file."""

    def __init__(self, model_dir: Path, log: Path, *options: str):
        super().__init__(model_dir, log, "--threads", "1", "--log-level", "info", *options,
                         start_timeout=180)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


def tracebacks(text: str) -> int:
    return text.count("Traceback") + text.count("Exception in ASGI application")


def exchange(address, data: bytes, timeout: float = 15.0) -> int | None:
    """Send raw bytes, read one final response (interim 1xx ones skipped); its status
    code, or None if the server closed the connection without answering."""
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:  # the server may answer (413, 431) and close before all is sent
            pass
        received = b""
        try:
            while True:
                while b"\r\n\r\n" not in received:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
                if re.match(rb"HTTP/1\.[01] 1\d\d", received) and b"\r\n\r\n" in received:
                    received = received.split(b"\r\n\r\n", 1)[1]  # 100 Continue
                    continue
                break
            head = received.split(b"\r\n\r\n", 1)[0]
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if length and not data.startswith(b"HEAD"):
                want = len(head) + 4 + int(length.group(1))
                while len(received) < want:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
        except (ConnectionResetError, TimeoutError, socket.timeout):
            pass
    found = re.match(rb"HTTP/1\.[01] (\d{3})", received)
    return int(found.group(1)) if found else None


def texts_of(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def build_exports(work: Path) -> dict[str, Path]:
    """A tiny export (fuzz, slow clients), a medium one (overload, abandoned work) and a
    MiniLM-L6-sized one (sustained overload): random BERTs over the test-suite's word-level
    tokenizer, pruned (the first two) and exported."""
    import torch
    from tests.cases import tiny_tokenizer
    from transformers import BertConfig, BertForSequenceClassification

    from nasprune.core.subnet import Subnet
    from nasprune.core.supernet import Supernet
    from nasprune.deploy.export.writer import export_model

    out = {}
    for name, hidden, ffn, layers, heads, subnet in (
            ("tiny", 32, 64, 2, 4, ((4, 48), (2, 32))),
            ("medium", 128, 512, 2, 4, ((4, 384), (3, 384))),
            ("minilm", 384, 1536, 6, 12, ((12, 1536),) * 6)):
        torch.manual_seed(0)
        model = BertForSequenceClassification(BertConfig(
            vocab_size=64, hidden_size=hidden, num_hidden_layers=layers,
            num_attention_heads=heads, intermediate_size=ffn,
            max_position_embeddings=64 if name == "tiny" else 512, num_labels=2,
            id2label={0: "negative", 1: "positive"},
            label2id={"negative": 0, "positive": 1})).eval()
        out[name] = export_model(Supernet(model), Subnet(subnet), work / name,
                                 tokenizer=tiny_tokenizer(), source_model=f"random {name}")
    return out
