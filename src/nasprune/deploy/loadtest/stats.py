"""A load test's numbers: the per-request record cut into steps and summarised
(requests/s, p50/p95/p99, failures by status), the saturation point (the first step whose
p95 exceeds the SLO or whose failure rate exceeds 1 %), the failure report of steps above
``max_failure_rate``, and the steps as CSV."""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nasprune.errors import NaspruneError

#: A step is saturated when more than this share of its requests failed.
MAX_FAILURE_RATE = 0.01


@dataclass
class StepStats:
    """One target at one user count."""

    target: str
    step: int
    users: int
    requests: int
    failures: int
    failure_rate: float
    duration_s: float
    rps: float  # all completed requests per second
    ok_rps: float  # successful requests per second (the throughput that is plotted)
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    #: failed requests by HTTP status ("0": no response: timeout or connection error)
    failure_statuses: dict[str, int] = field(default_factory=dict)


@dataclass
class TargetResult:
    name: str
    url: str
    steps: list[StepStats]
    saturation_users: int | None  # first saturated step's users; None = never saturated
    max_ok_rps: float


#: Statuses that no amount of load explains: the load test would only repeat them.
CONFIG_ERRORS = {401: "missing or wrong bearer token (--token / NASPRUNE_TOKEN)",
                 403: "forbidden", 404: "no /v1/predict here (is it a nasprune server?)",
                 405: "no POST /v1/predict here (is it a nasprune server?)",
                 415: "the server does not take JSON", 422: "the server refused the input"}


def summarise_record(name: str, record: Path) -> list[StepStats]:
    """Cut the per-request record into steps (by request start time) and summarise each."""
    import numpy as np

    marks: list[tuple[int, int, float]] = []  # step, users, start time
    stop = None
    requests: list[tuple[float, float, bool, str]] = []
    with open(record, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["kind"] == "step":
                marks.append((int(row["step"]), int(row["users"]), float(row["time"])))
            elif row["kind"] == "stop":
                stop = float(row["time"])
            elif row["kind"] == "req":
                requests.append((float(row["time"]), float(row["response_ms"]),
                                 row["ok"] == "1", row.get("status") or "0"))
    if not marks:
        raise NaspruneError(f"the load test of {name!r} recorded no steps ({record})")
    end = stop if stop is not None else max((t + ms / 1000 for t, ms, _, _ in requests),
                                            default=marks[-1][2])
    starts = [m[2] for m in marks]
    per_step: list[list[tuple[float, bool, str]]] = [[] for _ in marks]
    for started, ms, ok, status in requests:
        index = max(0, np.searchsorted(starts, started, side="right") - 1)
        per_step[index].append((ms, ok, status))
    stats = []
    for i, (step, users, begin) in enumerate(marks):
        finish = starts[i + 1] if i + 1 < len(marks) else end
        duration = max(finish - begin, 1e-9)
        times = np.array([ms for ms, _, _ in per_step[i]], dtype=float)
        failed = Counter(status for _, ok, status in per_step[i] if not ok)
        failures = sum(failed.values())
        n = len(times)

        def pct(q: float, times=times) -> float:
            return float(np.percentile(times, q)) if len(times) else math.nan

        stats.append(StepStats(
            target=name, step=step, users=users, requests=n, failures=failures,
            failure_rate=failures / n if n else 0.0, duration_s=round(duration, 3),
            rps=n / duration, ok_rps=(n - failures) / duration,
            p50_ms=pct(50), p95_ms=pct(95), p99_ms=pct(99),
            mean_ms=float(times.mean()) if n else math.nan,
            max_ms=float(times.max()) if n else math.nan,
            failure_statuses={k: failed[k] for k in sorted(failed, key=failed.__getitem__,
                                                           reverse=True)}))
    return stats


def saturation(steps: list[StepStats], slo_ms: float) -> StepStats | None:
    """The first step whose p95 exceeds the SLO or whose failure rate exceeds 1 %."""
    for step in steps:
        if step.requests == 0 or step.p95_ms > slo_ms or step.failure_rate > MAX_FAILURE_RATE:
            return step
    return None


def describe_statuses(statuses: dict[str, int]) -> str:
    """``{"401": 57, "0": 2}`` -> ``"HTTP 401 x57, no response x2"``."""
    parts = [("no response" if code in ("", "0") else f"HTTP {code}") + f" x{count}"
             for code, count in statuses.items()]
    return ", ".join(parts) or "no status recorded"


def failure_report(results: list[TargetResult], max_failure_rate: float) -> list[str]:
    """One line per target with a step failing more than ``max_failure_rate``; [] if none."""
    lines = []
    for result in results:
        bad = [s for s in result.steps if s.requests and s.failure_rate > max_failure_rate]
        if not bad:
            continue
        worst = max(bad, key=lambda s: s.failure_rate)
        hint = ""
        if "401" in worst.failure_statuses:
            hint = f" ({CONFIG_ERRORS[401]})"
        lines.append(f"{result.name}: {worst.failure_rate:.0%} of {worst.requests} requests "
                     f"failed at {worst.users} users ({describe_statuses(worst.failure_statuses)})"
                     f"{hint}, above --max-failure-rate {max_failure_rate:.0%}")
    return lines


def write_csv(results: list[TargetResult], path: Path) -> None:
    names = list(StepStats.__dataclass_fields__)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for result in results:
            for step in result.steps:
                row = asdict(step)
                row["failure_statuses"] = ";".join(f"{k}:{v}"
                                                   for k, v in step.failure_statuses.items())
                writer.writerow({k: round(v, 3) if isinstance(v, float) else v
                                 for k, v in row.items()})
