"""The GPU check (``make gpu-check``): what to run the first time a session is lent a GPU.

In one command of under 9 minutes it runs the ``cuda`` tests (tests/test_cuda.py), then one
``nasprune run --device cuda --precision bf16`` on SST-2 with MiniLM (the default
model) and ``run_time.py``'s other settings (the defaults, ``--max-train-examples``, seed
0), and writes into one folder (``$OUT`` when set, else ``runs/gpu-check-<time>``): the
tests' output and JUnit XML, the run's log and summary, ``nvidia-smi``, and
``gpu_check.json`` / ``gpu_check.md`` with the GPU run's stage times beside the CPU's for
the same settings, read from the committed ``results/run_time.json`` (or noted absent).
The run directory itself (weights) stays outside that folder, under ``runs/``.

    python benchmarks/gpu_check.py --dry-run      # what it would run; runs nothing
    make gpu-check                                # on the GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "glue"
CPU_FIGURES = REPO / "benchmarks" / "results" / "run_time.json"
#: Seconds for the cuda tests and for the run (together well under 9 minutes).
TESTS_S, RUN_S = 210, 300


def commands(args, out: Path, run_dir: Path) -> dict[str, list[str]]:
    python = sys.executable
    return {
        "tests": [python, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                  "--junitxml", str(out / "cuda-tests.xml"), "tests/test_cuda.py"],
        "run": [python, "-m", "nasprune", "-q", "run", "--task", "sst2", "--data-dir",
                str(args.data), "--max-train-examples", str(args.train_examples), "--seed", "0",
                "--device", "cuda", "--precision", "bf16", "--run-dir", str(run_dir)],
    }


def cpu_figures(train_examples: int) -> dict:
    """The CPU's stage seconds of the same settings (run_time.py's ``after`` or ``before``
    means), or why there are none."""
    if not CPU_FIGURES.is_file():
        return {"absent": f"{CPU_FIGURES.relative_to(REPO)} is not recorded yet"}
    recorded = json.loads(CPU_FIGURES.read_text())
    sizes = {r.get("train_examples") for r in recorded.get("runs", [])} - {None}
    if sizes and sizes != {train_examples}:
        return {"absent": f"run_time.json was recorded with {sorted(sizes)} training "
                          f"examples, not {train_examples}"}
    label = "after" if recorded.get("after_s") else "before"
    return {"label": label, "machine": recorded.get("machine"),
            "total_s": recorded.get(f"{label}_s"),
            "stages": {s["name"]: s.get(label) for s in recorded.get("stages", [])}}


def step(name: str, argv: list[str], out: Path, timeout: int, env: dict) -> dict:
    """Run ``argv`` with its output in ``out/<name>.txt``; its exit code and seconds."""
    start = time.perf_counter()
    with open(out / f"{name}.txt", "w") as log:
        try:
            code = subprocess.run(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                  env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    return {"command": " ".join(argv), "exit": code,
            "seconds": round(time.perf_counter() - start, 1)}


def device_facts(out: Path) -> dict:
    import torch

    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True)
        (out / "nvidia-smi.txt").write_text(smi.stdout + smi.stderr)
    facts = {"torch": torch.__version__, "cuda": torch.version.cuda,
             "available": torch.cuda.is_available()}
    if facts["available"]:
        facts.update(name=torch.cuda.get_device_name(0), count=torch.cuda.device_count(),
                     bf16=torch.cuda.is_bf16_supported())
    return facts


def markdown(payload: dict) -> str:
    lines = [f"# GPU check ({payload['device'].get('name', 'no CUDA device')})", ""]
    for name, done in payload["steps"].items():
        lines.append(f"- {name}: exit {done['exit']} in {done['seconds']} s")
    cpu = payload["cpu"]
    lines += ["", "| stage | GPU bf16 s | CPU s |", "|---|---:|---:|"]
    for stage, seconds in payload.get("gpu_stages", {}).items():
        other = cpu.get("stages", {}).get(stage)
        lines.append(f"| {stage} | {seconds:.1f} | {'-' if other is None else f'{other:.1f}'} |")
    if "absent" in cpu:
        lines += ["", f"CPU figures: {cpu['absent']}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print what would run")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--train-examples", type=int, default=8000,
                        help="run_time.py's default, so the CPU figures are the same run's")
    args = parser.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(os.environ.get("OUT") or REPO / "runs" / f"gpu-check-{stamp}")
    run_dir = REPO / "runs" / f"gpu-check-run-{stamp}"
    todo = commands(args, out, run_dir)
    if args.dry_run:
        print(f"output folder: {out}")
        for name, argv in todo.items():
            limit = TESTS_S if name == "tests" else RUN_S
            print(f"{name} (at most {limit} s): {' '.join(argv)}")
        print(f"CPU figures: {json.dumps(cpu_figures(args.train_examples))}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    payload = {"device": device_facts(out), "train_examples": args.train_examples,
               "steps": {"tests": step("tests", todo["tests"], out, TESTS_S, env),
                         "run": step("run", todo["run"], out, RUN_S, env)},
               "cpu": cpu_figures(args.train_examples)}
    summary = run_dir / "summary.json"
    if summary.is_file():
        shutil.copy(summary, out / "run-summary.json")
        seconds = json.loads(summary.read_text()).get("seconds", {})
        payload["gpu_stages"] = {k: v for k, v in seconds.items() if k != "total"}
        payload["gpu_total_s"] = seconds.get("total")
    for name in ("log.txt", "config.json"):
        if (run_dir / name).is_file():
            shutil.copy(run_dir / name, out / f"run-{name}")
    (out / "gpu_check.json").write_text(json.dumps(payload, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(payload))
    print(markdown(payload))
    return 0 if all(s["exit"] == 0 for s in payload["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
