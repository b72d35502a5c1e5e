"""7. CLI mistakes: every user mistake as a real ``python -m nasprune`` process."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def run_cli_mistakes(work: Path) -> tuple[dict, dict]:
    from tests.cases import SHARED_DATA
    from tests.cases.cli import MISTAKES, files, generated_mistakes

    made = files(work / "cli-files")
    paths = {k: str(v) for k, v in made.items()} | {"tmp": str(work), "data": str(SHARED_DATA)}
    cases = MISTAKES + generated_mistakes(work, made)

    def one(i_case):
        i, (name, args, message) = i_case
        cwd = work / f"cli-{i}"
        cwd.mkdir()
        argv = [a.format(**paths) for a in args]
        if argv[0] == "run" and "--run-dir" not in argv:  # never override the case's own
            argv += ["--run-dir", str(cwd / "run")]
        result = subprocess.run([sys.executable, "-m", "nasprune", *argv], capture_output=True,
                                text=True, timeout=300, cwd=cwd,
                                env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                                     "PATH": "/usr/bin:/bin", **{
                                         k: v for k, v in os.environ.items()
                                         if k == "PYTHONPATH"}})
        text = result.stdout + result.stderr
        return {"case": name, "exit": result.returncode, "traceback": "Traceback" in text,
                "one_line": len(result.stderr.strip().splitlines()) == 1,
                "message": message in result.stderr,
                "wrote": (cwd / "run").exists()}

    with ThreadPoolExecutor(2) as pool:
        rows = list(pool.map(one, enumerate(cases)))
    bad = [r for r in rows if r["traceback"] or r["exit"] != 2 or not r["one_line"]
           or not r["message"] or r["wrote"]]
    figures = {"cases": len(rows), "tracebacks": sum(r["traceback"] for r in rows)}
    figures["generated"] = len(rows) - len(MISTAKES)
    figures["not_as_expected"] = len(bad)
    detail = {"exit_2": sum(r["exit"] == 2 for r in rows),
              "one_line": sum(r["one_line"] for r in rows),
              "expected_message": sum(r["message"] for r in rows),
              "wrote_a_run_directory": sum(r["wrote"] for r in rows), "not_as_expected": bad}
    return figures, detail
