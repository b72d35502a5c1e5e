"""The stage record: each finished piece of the benchmark, kept in a committed JSON file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path


class Stages:
    """Results of finished stages in one JSON file (committed under results/, so a later
    session continues where this one stopped): a stage that is there is not rerun, and its
    recorded seconds are those of the run that computed it. A stage whose files a later
    stage needs (a checkpoint, a trial store: not committed) is rerun when they are gone
    and something still needs them."""

    def __init__(self, path: Path, legacy: Path | None = None, settings: dict | None = None,
                 defaults: dict | None = None):
        self.path = path
        self.done = {}
        for source in (legacy, path):
            if source is not None and source.is_file():
                self.done.update(json.loads(source.read_text()))
        text = json.dumps(settings or {}, sort_keys=True)
        self.key = hashlib.sha256(text.encode()).hexdigest()[:12]
        # stages recorded before keys existed were made with the default settings
        self.unkeyed_ok = settings is None or settings == defaults

    def _valid(self, name: str) -> bool:
        record = self.done.get(name)
        if record is None:
            return False
        return record["key"] == self.key if "key" in record else self.unkeyed_ok

    def has(self, *names: str) -> bool:
        return all(self._valid(n) for n in names)

    def __call__(self, name: str, fn, output: Path | None = None):
        if self._valid(name) and (output is None or output.exists()):
            return self.done[name]["result"]
        print(f"  stage {name} ...", flush=True)
        start = time.perf_counter()
        result = fn()
        self.done[name] = {"result": result, "seconds": time.perf_counter() - start,
                           "key": self.key}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.done, indent=1, default=str))
        tmp.replace(self.path)
        print(f"  stage {name}: {self.done[name]['seconds']:.0f} s", flush=True)
        return result

    def seconds(self, *names: str) -> float:
        return sum(self.done[n]["seconds"] for n in names if self._valid(n))


@dataclasses.dataclass
class Point:
    """A searched sub-network as the stage files keep it (what picks and fronts need)."""

    id: int
    subnet: object
    metrics: dict
    is_full_fidelity: bool = True


def trials_of(store_path: Path) -> dict:
    """The full-fidelity trials of a store and the unpruned model's metrics, as JSON."""
    from nasprune.search.pareto import full_reference
    from nasprune.search.store import TrialStore

    with TrialStore(store_path) as store:
        trials = [t for t in store.trials() if t.is_full_fidelity]
        full = full_reference(trials, store.full_subnet())
    return {"full": full, "trials": [{"id": t.id, "subnet": t.subnet.to_json(),
                                      "metrics": dict(t.metrics)} for t in trials]}


def points(summary: dict) -> tuple[list[Point], dict]:
    from nasprune.core.subnet import Subnet

    return ([Point(t["id"], Subnet.from_json(t["subnet"]), t["metrics"])
             for t in summary["trials"]], summary["full"])


