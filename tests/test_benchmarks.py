"""A benchmark script runs end to end (tiny settings, results in a temporary folder): the
scripts that record the project's figures do not rot between real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

BENCHMARKS = REPO / "benchmarks"


def test_subnet_speed_runs_end_to_end_on_a_tiny_model(tmp_path):
    recorded = BENCHMARKS / "results" / "subnet_speed.json"
    before = recorded.read_bytes() if recorded.is_file() else None
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "subnet_speed.py", "--tiny", "--results", tmp_path],
                          cwd=BENCHMARKS, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "subnet_speed.json").read_text())
    assert result["benchmark"] == "subnet_speed" and result["model"].startswith("tiny")
    rows = {r["subnet"]: r for r in result["rows"]}
    assert {"uniform 100%", "uniform 25%"} <= set(rows)
    assert rows["uniform 25%"]["params"] < rows["uniform 100%"]["params"]
    assert all(r["eval_use_s"] > 0 and r["latency_b1_ms"] > 0 for r in rows.values())
    assert (tmp_path / "subnet_speed.md").read_text().startswith("# Sub-network speed")
    assert (recorded.read_bytes() if recorded.is_file() else None) == before  # untouched


def test_the_gpu_check_dry_run_prints_what_it_would_run(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"),
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(["make", "-s", "gpu-check", "ARGS=--dry-run",
                           f"GPU_PY={sys.executable}"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"output folder: {tmp_path / 'out'}"
    assert "-m cuda" in lines[1] and "tests/test_cuda.py" in lines[1]
    assert "nasprune -q run --task sst2" in lines[2]
    assert "--device cuda --precision bf16" in lines[2]
    assert lines[3].startswith("CPU figures: ")
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
