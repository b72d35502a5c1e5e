"""What a load test runs against and with: the targets, the user steps, the settings, and
the inputs drawn from a real validation file, all checked before any request is sent."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nasprune.errors import NaspruneError

#: Column names tried, in order, when no text column is given; value = its pair column.
_TEXT_COLUMNS = {"sentence": None, "text": None, "sentence1": "sentence2",
                 "premise": "hypothesis", "question1": "question2", "question": "sentence"}


@dataclass
class LoadTestConfig:
    """Everything ``nasprune loadtest`` takes; saved (without the token) in the summary."""

    targets: dict[str, str]  # name -> base URL, e.g. {"base": "http://127.0.0.1:8000"}
    users: list[int] = field(default_factory=lambda: [1, 8, 16, 32])
    step_time: float = 10.0
    texts_from: Path | None = None
    text_column: str | None = None
    pair_column: str | None = None
    max_texts: int = 2000
    slo_ms: float = 200.0
    out_dir: Path = Path("loadtest")
    think_ms: float = 0.0  # pause between a user's requests; 0 = back to back
    token: str | None = None
    timeout_s: float = 30.0  # per request; a timeout counts as a failure
    seed: int = 0
    max_failure_rate: float = 0.5  # a step failing more than this fails the load test

    def __post_init__(self) -> None:
        if not self.targets:
            raise NaspruneError("give at least one --target NAME=URL")
        if not self.users or any(u < 1 for u in self.users):
            raise NaspruneError("user counts must be positive integers")
        if self.step_time <= 0:
            raise NaspruneError("step time must be positive")
        if self.slo_ms <= 0:
            raise NaspruneError("the SLO must be positive")
        if not 0 <= self.max_failure_rate <= 1:
            raise NaspruneError(f"--max-failure-rate must be within 0..1, got "
                                f"{self.max_failure_rate!r}")
        self.out_dir = Path(self.out_dir)
        if self.texts_from is not None:
            self.texts_from = Path(self.texts_from)

    def public_dict(self) -> dict:
        data = asdict(self)
        data["token"] = "set" if self.token else None
        data["out_dir"] = str(self.out_dir)
        data["texts_from"] = str(self.texts_from) if self.texts_from else None
        return data


def parse_targets(specs: list[str]) -> dict[str, str]:
    """``["base=http://127.0.0.1:8000", ...]`` -> ordered ``{name: url}``."""
    targets: dict[str, str] = {}
    for spec in specs:
        name, sep, url = spec.partition("=")
        name, url = name.strip(), url.strip().rstrip("/")
        if not sep or not name or not url:
            raise NaspruneError(f"target must look like NAME=URL, got {spec!r}")
        if not url.startswith(("http://", "https://")):
            raise NaspruneError(f"target {name!r}: URL must start with http:// or https://")
        if name in targets:
            raise NaspruneError(f"target name {name!r} given twice")
        if not all(c.isalnum() or c in "-_." for c in name):
            raise NaspruneError(f"target name {name!r}: use letters, digits, '-', '_', '.'")
        targets[name] = url
    return targets


def parse_users(spec: str) -> list[int]:
    """``"1,8,16,32"`` or ``"START:STEP:MAX"`` (e.g. ``"8:8:64"``) -> user counts."""
    try:
        if ":" in spec:
            start, step, stop = (int(x) for x in spec.split(":"))
            if start < 1 or step < 1 or stop < start:
                raise ValueError
            users = list(range(start, stop + 1, step))
        else:
            users = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise NaspruneError(
            f"--users must be a list like 1,8,16,32 or START:STEP:MAX, got {spec!r}"
        ) from None
    if not users or any(u < 1 for u in users):
        raise NaspruneError(f"--users needs positive counts, got {spec!r}")
    return users


def load_texts(path: str | Path, text_column: str | None = None,
               pair_column: str | None = None, *, limit: int = 2000,
               seed: int = 0) -> list[list[str]]:
    """Inputs for the load test from a TSV/CSV/JSONL file: ``[text]`` or ``[text, pair]``."""
    from nasprune.data.io import read_table

    frame = read_table(path)
    if text_column is None:
        for name, pair in _TEXT_COLUMNS.items():
            if name in frame.columns:
                text_column = name
                if pair_column is None and pair in frame.columns:
                    pair_column = pair
                break
        else:
            raise NaspruneError(
                f"{path}: no text column found among {list(frame.columns)}; "
                "pass --text-column")
    for column in (text_column, pair_column):
        if column is not None and column not in frame.columns:
            raise NaspruneError(f"{path}: no column {column!r} (has {list(frame.columns)})")
    columns = [text_column] + ([pair_column] if pair_column else [])
    rows = [[str(v) for v in row] for row in frame[columns].itertuples(index=False)]
    rows = [row for row in rows if all(part.strip() for part in row)]
    if not rows:
        raise NaspruneError(f"{path}: column {text_column!r} has no non-empty text")
    if len(rows) > limit:
        rows = random.Random(seed).sample(rows, limit)
    return rows
