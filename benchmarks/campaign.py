"""The base-model evidence campaign: ``benchmarks.quality`` items on MPNet-base that take many
CPU-hours, run in priority order across as many sessions as it takes.

    python benchmarks/campaign.py run      # make campaign: resume what remains, in order
    python benchmarks/campaign.py status   # make campaign-status: done / running / waiting

Each item is one ``python -m benchmarks.quality`` call (model, task, seed, arm). Its state lives in
``$NASPRUNE_BENCH_HOME`` (default ``~/.cache/nasprune/bench``), outside the repository;
every finished stage is recorded in ``results/quality-stages/`` at once and every finished
item in ``results/quality.{json,md}``, so a stopped campaign loses only the stage in flight
(training stages checkpoint at least every 10 minutes). An item that waits on a decision
(``after``) is skipped until it is settled in ``SETTLED``. ``results/cost.json`` holds the
measured examples per second of each stage, from which ``status`` estimates what remains.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from common import CHECKPOINTS, RESULTS, SETTINGS

HERE = Path(__file__).resolve().parent
STAGES = RESULTS / "quality-stages"
LOCK = CHECKPOINTS / "campaign.lock"
#: Where the README's ``nohup make campaign >> ...`` writes; ``status`` quotes its last line.
LOG = CHECKPOINTS.parent / "campaign.log"
#: Decisions that items wait for: the default recipe (arm d) is settled by the fast-recipe
#: issue; its rows are run once, with the defaults they will be published with.
SETTLED = {"defaults": False}
TRIALS = 100
SEARCH_SHARE = 0.1  # the search split's share of the training rows


@dataclasses.dataclass(frozen=True)
class Item:
    """One arm of one (model, task, seed) of the quality benchmark."""

    model: str
    task: str
    seed: int
    arm: str
    after: str | None = None

    @property
    def name(self) -> str:
        return f"{self.model}-{self.task}-s{self.seed}-{self.arm}"

    @property
    def run(self) -> str:  # the quality run name (settings.run_name: MiniLM-L6's unprefixed)
        prefix = "" if self.model == "minilm-l6" else f"{self.model}-"
        return f"{prefix}{self.task}-s{self.seed}"

    def argv(self, threads: int) -> list[str]:
        return ["-m", "benchmarks.quality", "--model", self.model, "--tasks", self.task,
                "--seeds", str(self.seed), "--arms", self.arm, "--threads", str(threads)]

    def spent(self) -> float | None:
        """Measured seconds of a finished item (None: not finished)."""
        mine = [r["seconds"] for r in rows().get(self.run, [])
                if r["arm"] == self.arm and r["split"] == "validation"]
        return mine[0] if mine else None


@dataclasses.dataclass(frozen=True)
class RunTime:
    """One default ``nasprune run`` on SST-2 8k (``run_time.py``, the fast-recipe issue):
    ``profile`` runs it under py-spy (``profile_run.py``)."""

    label: str
    seed: int
    after: str | None = None

    @property
    def name(self) -> str:
        return f"minilm-l6-sst2-s{self.seed}-{self.label}"

    def argv(self, threads: int) -> list[str]:
        if self.label == "profile":
            return ["benchmarks/profile_run.py", "--train-examples", "8000", "--seed",
                    str(self.seed), "--threads", str(threads)]
        return ["benchmarks/run_time.py", "--label", self.label, "--seeds", str(self.seed),
                "--threads", str(threads)]

    def spent(self) -> float | None:
        if self.label == "profile":
            path = RESULTS / "run_time-profile.json"
            found = json.loads(path.read_text()) if path.is_file() else {}
            return found.get("wall_s") if found.get("train_examples") == 8000 else None
        path = RESULTS / "run_time-stages.json"
        found = json.loads(path.read_text()) if path.is_file() else {}
        return found.get(f"{self.label}-s{self.seed}", {}).get("wall_s")


#: In priority order. The tutorial's arm does not depend on the defaults, so it goes first;
#: the fast-recipe issue's measurements (MiniLM-L6, ~5x cheaper) settle the defaults that
#: the default arm (d) of MPNet-base waits for.
ITEMS = (
    Item("mpnet-base", "rte", 0, "a"),
    RunTime("profile", 0),  # first: where the time goes decides what to change
    RunTime("before", 0),
    RunTime("before", 1),
    # the first lever measured on quality: both distillation stages at batch 32 (1.3x the
    # examples per second, results/step_speed.md), against arm (d) of the same seeds
    Item("minilm-l6", "sst2", 0, "f"),
    Item("minilm-l6", "sst2", 1, "f"),
    # small budgets: the same search as (f), each pick recovered for the compute of a
    # half-size pick's 3 epochs (--recover-scaled)
    Item("minilm-l6", "sst2", 0, "g"),
    Item("minilm-l6", "sst2", 1, "g"),
    Item("mpnet-base", "rte", 0, "d", after="defaults"),
    Item("mpnet-base", "sst2", 0, "d", after="defaults"),
    Item("mpnet-base", "rte", 1, "d", after="defaults"),
    Item("mpnet-base", "rte", 2, "d", after="defaults"),
    Item("mpnet-base", "sst2", 1, "d", after="defaults"),
    Item("mpnet-base", "sst2", 0, "a"),
)


def rows() -> dict:
    path = STAGES / "rows.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def done(item) -> bool:
    return item.spent() is not None


def running() -> dict | None:
    """The item in flight, from the lock file, if its process is alive."""
    if not LOCK.is_file():
        return None
    info = json.loads(LOCK.read_text())
    try:
        os.kill(info["pid"], 0)
    except (ProcessLookupError, PermissionError):
        return None
    return info


# ------------------------------------------------------------------------- estimates


def train_examples(task: str) -> int:
    """Training rows of the benchmark's setting, the search split held out."""
    total = SETTINGS[task]["max_train_examples"] or {"rte": 2490, "sst2": 60614}[task]
    return round(total * (1 - SEARCH_SHARE))


def cost() -> dict:
    """Measured examples per second per (model, stage), from the recorded stages: teacher
    (fine-tuning), supernet (super-network distillation), masked search and search
    (candidate evaluation by masking and through ``use()``: examples of the search split
    per second), recovery (pick distillation and export)."""
    rates: dict[str, dict[str, dict]] = {}
    for path in sorted(STAGES.glob("*-s?.json")):
        model = "mpnet-base" if path.stem.startswith("mpnet-base-") else "minilm-l6"
        task = path.stem.rsplit("-s", 1)[0].rsplit("-", 1)[-1]
        record = json.loads(path.read_text())
        teacher = record.get("teacher", {}).get("result") or {}
        if not teacher.get("examples_per_second"):
            continue
        n, search_n = teacher["train_examples"], teacher.get("search_examples") or 0
        epochs = teacher["config"]["epochs"]
        measured = {"teacher": teacher["examples_per_second"]}
        for key, stage, examples in (("a:search", "masked search", TRIALS * search_n),
                                     ("d:search", "search", TRIALS * search_n),
                                     ("d:supertrain", "supernet", n),
                                     ("d:pick50", "recovery", 3 * n)):
            if key in record and record[key]["seconds"] > 0 and examples:
                measured[stage] = examples / record[key]["seconds"]
        for stage, rate in measured.items():
            rates.setdefault(model, {}).setdefault(stage, {})[f"{path.stem}"] = {
                "examples_per_second": round(rate, 2), "task": task, "epochs": epochs}
    return rates


def write_cost() -> None:
    (RESULTS / "cost.json").write_text(json.dumps(
        {"benchmark": "cost", "unit": "examples per second, 2 CPU threads unless the run's "
         "device says otherwise", "rates": cost()}, indent=1) + "\n")


def rate(rates: dict, model: str, task: str, stage: str) -> tuple[float | None, str]:
    """The mean measured rate (the same task's when there is one: an RTE pair is several
    SST-2 sentences long), or MiniLM-L6's scaled by the models' FLOPs per token."""
    for source, factor, how in ((model, 1.0, "measured"),
                                ("minilm-l6", FLOPS_RATIO[model], "scaled from MiniLM-L6")):
        found = rates.get(source, {}).get(stage, {}).values()
        same = [r["examples_per_second"] for r in found if r["task"] == task]
        values = same or [r["examples_per_second"] for r in found]
        if values:
            return sum(values) / len(values) / factor, how
    return None, "unknown"


#: Cost per token of each model over MiniLM-L6's, for estimates before a rate is measured:
#: MPNet-base measured ~5x on these cores (its encoder's FLOPs per token are 8x).
FLOPS_RATIO = {"mpnet-base": 5.0, "minilm-l6": 1.0}


#: A training progress line of the log and the stage of ``estimate`` it counts.
PROGRESS = re.compile(r"^(fine-tuning|super-network distillation): (\d+)/(\d+) after")
LOG_STAGES = {"fine-tuning": "teacher", "super-network distillation": "supernet"}


def in_flight() -> dict[str, float]:
    """The running stage's finished share, from the log's last progress line."""
    lines = LOG.read_text(errors="replace").splitlines()[-50:] if LOG.is_file() else []
    for line in reversed(lines):
        if found := PROGRESS.match(line):
            return {LOG_STAGES[found[1]]: int(found[2]) / max(1, int(found[3]))}
    return {}


def estimate(item, rates: dict, progress: dict | None = None) -> tuple[float | None, str]:
    """Seconds the item still needs (stages already recorded are not counted; ``progress``:
    the finished share of the stage in flight)."""
    if isinstance(item, RunTime):  # the default arm's stages on SST-2 8k, as measured
        record = STAGES / "sst2-s0.json"
        have = json.loads(record.read_text()) if record.is_file() else {}
        parts = [have.get(k, {}).get("seconds") for k in ("teacher", "d:supertrain",
                                                           "d:search", "d:pick50")]
        if None in parts:
            return None, "no SST-2 default-arm stages recorded"
        return sum(parts), "measured (quality, SST-2 seed 0, arm d)"
    record = STAGES / f"{item.run}.json"
    have = json.loads(record.read_text()) if record.is_file() else {}
    n = train_examples(item.task)
    search_n = round(n / (1 - SEARCH_SHARE) * SEARCH_SHARE)
    need = [("teacher", n * SETTINGS[item.task]["epochs"])] if "teacher" not in have else []
    if item.arm == "a":
        need += [("masked search", TRIALS * search_n)] if "a:search" not in have else []
    else:
        s = "f" if item.arm in "fg" else "d"  # the arm's own stages (quality.SEARCH_OF)
        need += [(stage, k) for stage, k, key in (("supernet", n, f"{s}:supertrain"),
                                                 ("search", TRIALS * search_n, f"{s}:search"),
                                                 ("recovery", 3 * 3 * n, f"{item.arm}:pick20"))
                 if key not in have]
    total, how = 0.0, set()
    for stage, examples in need:
        r, source = rate(rates, item.model, item.task, stage)
        if r is None:
            return None, f"no rate for {stage}"
        total += examples * (1 - (progress or {}).get(stage, 0.0)) / r
        how.add(source)
    return total, ", ".join(sorted(how)) or "nothing left"


# ------------------------------------------------------------------------------ run


def status() -> int:
    now, rates = running(), cost()
    print(f"campaign state: {CHECKPOINTS}")
    left = 0.0
    for item in ITEMS:
        mine = now is not None and now["item"] == item.name
        seconds, how = estimate(item, rates, in_flight() if mine else None)
        spent = item.spent()
        if spent is not None:
            state = f"done      {spent / 60:.0f} min measured (shared stages included)"
        else:
            if mine:
                label = f"running   since {time.strftime('%H:%M', time.localtime(now['start']))}"
            elif item.after and not SETTLED[item.after]:
                label = f"waiting   on {item.after!r}"
            else:
                label = "waiting  "
            left += seconds or 0.0
            est = f"~{seconds / 3600:.1f} h" if seconds is not None else "?"
            state = f"{label}; still needs {est} ({how})"
        print(f"  {item.name:<24} {state}")
    print(f"estimated compute left: ~{left / 3600:.1f} h on this machine's cores")
    if now and LOG.is_file():
        last = LOG.read_text(errors="replace").strip().splitlines()[-1:]
        print(f"last line of {LOG}: {last[0] if last else ''}")
    return 0


def run(threads: int) -> int:
    if running():
        print(f"a campaign is already running (pid {running()['pid']}): see `make campaign-status`")
        return 1
    write_cost()
    for item in ITEMS:
        if done(item):
            continue
        if item.after and not SETTLED[item.after]:
            print(f"{item.name}: waits on {item.after!r}", flush=True)
            continue
        CHECKPOINTS.mkdir(parents=True, exist_ok=True)
        LOCK.write_text(json.dumps({"pid": os.getpid(), "item": item.name, "start": time.time()}))
        print(f"{time.strftime('%F %T')} {item.name}: starting", flush=True)
        code = subprocess.run([sys.executable, *item.argv(threads)], cwd=HERE.parent).returncode
        LOCK.unlink(missing_ok=True)
        if code:
            print(f"{item.name}: exited with {code}; run again to resume", flush=True)
            return code
        print(f"{time.strftime('%F %T')} {item.name}: done", flush=True)
        write_cost()
    status()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "status"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    return run(args.threads) if args.command == "run" else status()


if __name__ == "__main__":
    raise SystemExit(main())
