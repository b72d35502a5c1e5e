"""``python -m benchmarks.reliability``: run the checks, write results/reliability.*."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_results
from benchmarks.reliability import __doc__ as DOC
from benchmarks.reliability.abandoned import run_abandoned
from benchmarks.reliability.cli_mistakes import run_cli_mistakes
from benchmarks.reliability.concurrent_search import finished_run, run_concurrent
from benchmarks.reliability.fuzz import run_fuzz
from benchmarks.reliability.kill_resume import run_kill_resume
from benchmarks.reliability.overload import run_overload
from benchmarks.reliability.overload_sustained import (
    run_after_slow_batch,
    run_overload_sustained,
)
from benchmarks.reliability.report import markdown
from benchmarks.reliability.shared import build_exports
from benchmarks.reliability.slow_clients import run_slow_clients
from benchmarks.reliability.tamper import run_tamper


def main() -> None:
    parser = argparse.ArgumentParser(description=DOC.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fuzz", type=int, default=600, help="fuzzed requests (>= 500)")
    parser.add_argument("--users", type=int, default=40, help="overload_sustained users")
    parser.add_argument("--seconds", type=float, default=60, help="overload_sustained time")
    parser.add_argument("--stall", type=float, default=20,
                        help="overload_after_slow_batch: seconds the one slow batch is starved")
    parser.add_argument("--only", default=None,
                        help="comma-separated sections to run (a trial; writes nothing)")
    args = parser.parse_args()
    from nasprune.core.models import quiet_libraries

    quiet_libraries()
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="nasprune-reliability-"))
    only = set(args.only.split(",")) if args.only else None
    figures: dict = {}
    detail: dict = {}

    def section(name: str, fn, *fn_args) -> None:
        if only is not None and name not in only:
            return
        t = time.time()
        print(f"{name} ...", flush=True)
        figures[name], detail[name] = fn(*fn_args)
        print(f"{name}: {figures[name]} ({time.time() - t:.0f} s)", flush=True)

    try:
        exports = build_exports(work)
        section("fuzz", run_fuzz, exports["tiny"], work, args.fuzz, args.seed)
        section("overload", run_overload, exports["medium"], work, 300, 48, args.seed)
        section("slow_clients", run_slow_clients, exports["tiny"], work, 100)
        section("abandoned", run_abandoned, exports["medium"], work, 20, args.seed)
        section("kill_resume", run_kill_resume, work, 5, 40, args.seed)
        if only is None or "concurrent_search" in only:
            run_dir = finished_run(work)
            section("concurrent_search", run_concurrent, run_dir)
        section("cli_mistakes", run_cli_mistakes, work)
        section("tamper", run_tamper, work)
        section("overload_sustained", run_overload_sustained, exports["minilm"], work,
                args.users, args.seconds, args.seed)
        section("overload_after_slow_batch", run_after_slow_batch, exports["minilm"], work,
                args.users, args.seconds, args.seed, args.stall)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if only is not None:
        print(json.dumps({"figures": figures, "detail": detail}, indent=2, default=str))
        return
    write_results("reliability", figures, markdown(figures, detail, time.time() - started))


if __name__ == "__main__":
    main()

