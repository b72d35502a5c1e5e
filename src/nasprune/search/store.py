"""The trial store: one SQLite file per run, one row per evaluated sub-network.

Plain ``sqlite3`` (standard library) rather than Optuna's RDB storage, because a trial
here is a *sub-network* with a free set of measured metrics and up to two fidelities,
shared by searchers that are not Optuna's; Optuna's storage would force every searcher
through a study's parameter distributions and pull in SQLAlchemy for a two-table schema.
The file is opened in WAL mode and every trial is written in its own transaction, so a
killed search loses at most the candidates in flight and readers (``nasprune pareto``)
never block the writer.

Layout: ``RUN_DIR/search/trials.db`` (``RunDir.store``). Metric units: ``error``
and ``metric`` fractions, ``params``/``encoder_params`` counts, ``flops`` per sequence,
``latency`` milliseconds.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasprune.core.subnet import Subnet
from nasprune.errors import NaspruneError
from nasprune.rundir import RunDir

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    id            INTEGER PRIMARY KEY,
    subnet        TEXT NOT NULL UNIQUE,
    metrics       TEXT NOT NULL,
    fidelity      REAL NOT NULL,
    low_metrics   TEXT,
    low_fidelity  REAL,
    promoted      INTEGER,
    wall_s        REAL NOT NULL,
    searcher      TEXT NOT NULL,
    created       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Trial:
    """One evaluated sub-network.

    ``metrics`` are measured at ``fidelity`` (fraction of the search split, 1.0 = all).
    With multi-fidelity search, ``low_metrics`` holds the first look on the subset and
    ``promoted`` says whether the candidate went on to the full set (then ``metrics`` are
    the full-set ones); ``promoted`` is ``None`` for single-fidelity trials.
    """

    id: int
    subnet: Subnet
    metrics: dict[str, float]
    fidelity: float = 1.0
    low_metrics: dict[str, float] | None = None
    low_fidelity: float | None = None
    promoted: bool | None = None
    wall_s: float = 0.0
    searcher: str = ""
    created: float = field(default=0.0, compare=False)

    @property
    def is_full_fidelity(self) -> bool:
        return self.fidelity >= 1.0

    def get(self, name: str, default: float = float("nan")) -> float:
        return self.metrics.get(name, default)


def _row_to_trial(row: Sequence[Any]) -> Trial:
    tid, subnet, metrics, fidelity, low, low_fid, promoted, wall, searcher, created = row
    return Trial(
        id=tid,
        subnet=Subnet.from_json(subnet),
        metrics=json.loads(metrics),
        fidelity=fidelity,
        low_metrics=json.loads(low) if low else None,
        low_fidelity=low_fid,
        promoted=None if promoted is None else bool(promoted),
        wall_s=wall,
        searcher=searcher,
        created=created,
    )


class TrialStore:
    """Persistent, resumable record of a search (see module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    @classmethod
    def for_run(cls, run_dir: str | Path) -> TrialStore:
        """The store of a run directory (created if missing)."""
        return cls(RunDir(run_dir).store)

    @classmethod
    def open_existing(cls, run_dir: str | Path) -> TrialStore:
        """The store of a run directory that must already hold a search."""
        path = RunDir(run_dir).store
        if not path.exists():
            raise NaspruneError(f"no search results in {run_dir} (expected {path})")
        return cls(path)

    # -- trials
    def add(
        self,
        subnet: Subnet,
        metrics: dict[str, float],
        *,
        fidelity: float = 1.0,
        low_metrics: dict[str, float] | None = None,
        low_fidelity: float | None = None,
        promoted: bool | None = None,
        wall_s: float = 0.0,
        searcher: str = "",
    ) -> Trial:
        """Persist one evaluated candidate in its own transaction and return it."""
        clean = {k: float(v) for k, v in metrics.items()}
        low = {k: float(v) for k, v in low_metrics.items()} if low_metrics else None
        created = time.time()
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                cur = self._db.execute(
                    "INSERT INTO trials (subnet, metrics, fidelity, low_metrics, low_fidelity,"
                    " promoted, wall_s, searcher, created) VALUES (?,?,?,?,?,?,?,?,?)",
                    (subnet.to_json(), json.dumps(clean), float(fidelity),
                     json.dumps(low) if low else None, low_fidelity,
                     None if promoted is None else int(promoted), float(wall_s), searcher,
                     created),
                )
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"{subnet} is already in the store") from exc
        return Trial(cur.lastrowid, subnet, clean, float(fidelity), low, low_fidelity,
                     promoted, float(wall_s), searcher, created)

    def get(self, subnet: Subnet) -> Trial | None:
        """The stored result of ``subnet``, if it was evaluated (duplicate lookup)."""
        row = self._db.execute(
            "SELECT * FROM trials WHERE subnet = ?", (subnet.to_json(),)
        ).fetchone()
        return _row_to_trial(row) if row else None

    def by_id(self, trial_id: int) -> Trial | None:
        row = self._db.execute("SELECT * FROM trials WHERE id = ?", (trial_id,)).fetchone()
        return _row_to_trial(row) if row else None

    def trials(self, *, full_fidelity_only: bool = False) -> list[Trial]:
        """All trials in evaluation order."""
        rows = self._db.execute("SELECT * FROM trials ORDER BY id").fetchall()
        out = [_row_to_trial(r) for r in rows]
        return [t for t in out if t.is_full_fidelity] if full_fidelity_only else out

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]

    def __iter__(self) -> Iterator[Trial]:
        return iter(self.trials())

    def __contains__(self, subnet: object) -> bool:
        return isinstance(subnet, Subnet) and self.get(subnet) is not None

    # -- run metadata (JSON values): objectives, space, searcher, full sub-network, ...
    def set_meta(self, key: str, value: Any) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    def full_subnet(self) -> Subnet | None:
        text = self.get_meta("full_subnet")
        return Subnet.from_json(text) if text else None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TrialStore:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
