"""A benchmark script runs end to end (tiny settings, results in a temporary folder): the
scripts that record the project's figures do not rot between real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def _bench_env(results) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "NASPRUNE_BENCH_RESULTS": str(results),
            "NASPRUNE_BENCH_HOME": str(results / "home"),
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO),
                                           os.environ.get("PYTHONPATH", "")])}


def test_benchmark_files_are_short():
    """The modules' line cap covers the benchmarks too: a long script becomes a package."""
    from test_layout import MAX_LINES

    long = [f"{p.relative_to(BENCHMARKS)}: {n}" for p in BENCHMARKS.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, long


def test_quality_report_rewrites_the_recorded_tables(tmp_path):
    """``--report`` rebuilds quality.md from the committed stage records alone (no model),
    every recorded run's tables whatever tasks the call names (a campaign item's call names
    one task: the report once lost the other task's picks)."""
    import shutil

    shutil.copytree(BENCHMARKS / "results" / "quality-stages", tmp_path / "quality-stages")
    shutil.copy(BENCHMARKS / "results" / "quality.json", tmp_path / "quality.json")
    done = subprocess.run([sys.executable, "-m", "benchmarks.quality", "--report", "--tasks",
                           "rte", "--seeds", "0"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=_bench_env(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    text = (tmp_path / "quality.md").read_text()
    assert "## MiniLM-L6 · SST2" in text and "## Targets" in text
    sst2 = text.split("## MiniLM-L6 · SST2")[1].split("## ")[0]
    assert "| d | 50% | `" in sst2  # the first seed's picks
    recorded = json.loads((BENCHMARKS / "results" / "quality.json").read_text())["summary"]
    assert json.loads((tmp_path / "quality.json").read_text())["summary"] == recorded


def _rte_stages_recorded(tmp_path) -> Path:
    """MPNet's RTE seed-0 teacher (3.0 examples/s) and masked search (500 s), as recorded."""
    stages = tmp_path / "quality-stages"
    stages.mkdir()
    teacher = {"examples_per_second": 3.0, "train_examples": 2241, "search_examples": 249,
               "config": {"epochs": 5}}
    (stages / "mpnet-base-rte-s0.json").write_text(json.dumps(
        {"teacher": {"result": teacher, "seconds": 3735.0, "key": "k"},
         "a:search": {"result": True, "seconds": 500.0, "key": "k"}}))
    return stages


def test_campaign_status_reads_the_stage_records(tmp_path):
    """Every item is listed; a finished stage's measured rate feeds the estimates, and an
    item whose arm has rows is done."""
    stages = _rte_stages_recorded(tmp_path)
    (stages / "rows.json").write_text(json.dumps({"mpnet-base-rte-s0": [
        {"arm": "a", "split": "validation", "seconds": 4400.0}], "sst2-s0": [  # MiniLM-L6's
        {"arm": "f", "split": "validation", "seconds": 1800.0}]}))  # runs are unprefixed
    done = subprocess.run([sys.executable, "benchmarks/campaign.py", "status"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=_bench_env(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:-1]}
    assert "done" in lines["mpnet-base-rte-s0-a"] and "73 min" in lines["mpnet-base-rte-s0-a"]
    assert "on 'defaults'" in lines["mpnet-base-rte-s0-d"]
    # SST-2: a teacher of 7,200 examples x 2 epochs at the measured 3.0/s (4,800 s) and a
    # search of 100 x 800 examples at RTE's measured 100 x 249 / 500 s (1,606 s): 1.8 h
    assert "~1.8 h (measured)" in lines["mpnet-base-sst2-s0-a"]
    # the fast-recipe issue's runs come before the default arm of the base model
    names = list(lines)
    assert names.index("minilm-l6-sst2-s0-before") < names.index("mpnet-base-rte-s0-d")
    assert "no SST-2 default-arm stages recorded" in lines["minilm-l6-sst2-s1-before"]
    assert "done" in lines["minilm-l6-sst2-s0-f"] and "30 min" in lines["minilm-l6-sst2-s0-f"]
    assert "waiting" in lines["minilm-l6-sst2-s1-f"]
    assert names.index("minilm-l6-sst2-s1-f") < names.index("mpnet-base-rte-s0-d")


def test_the_profile_puts_each_sample_in_a_stage_and_an_activity(tmp_path):
    """py-spy's raw stacks (outermost first, methods named with their class, as py-spy 0.4
    writes them) are classified by the innermost pipeline stage and the first activity in
    priority order: the teacher's forward before the forward."""
    sys.path.insert(0, str(BENCHMARKS))
    from profile_run import breakdown

    run = "<module> (nasprune/__main__.py:3);run (nasprune/pipeline/__init__.py:120)"
    train = f"{run};supertrain_stage (stages.py:80);train (loop.py:140)"
    stacks = {
        f"{train};DistillStrategy.backward (distill.py:70);"
        "DistillLoss.targets (nasprune/train/losses.py:90);BertModel.forward (bert.py:10)": 3,
        f"{train};DistillStrategy.backward (distill.py:75);Tensor.backward (torch/_tensor.py:6);"
        "_engine_run_backward (torch/autograd/graph.py:8)": 4,
        f"{train};Precision.step (precision.py:59);Adam.step (torch/optim/adam.py:248);"
        "adam (torch/optim/adam.py:970);_single_tensor_adam (torch/optim/adam.py:544)": 1,
        f"{run};search_stage (stages.py:140);SubnetEvaluator.__call__ (objective.py:60);"
        "evaluate (nasprune/train/evaluation.py:70);BertModel.forward (bert.py:10)": 1,
        f"{run};search_stage (stages.py:140);Supernet.reorder_by_importance (supernet.py:9);"
        "fisher (importance.py:40);Linear.forward (torch/nn/modules/linear.py:1)": 1,
    }
    raw = tmp_path / "raw.txt"
    raw.write_text("".join(f"{stack} {n}\n" for stack, n in stacks.items()))
    result = breakdown(raw)
    distill = result["stages"]["super-network distillation"]
    assert result["samples"] == 10 and distill["share"] == 0.8
    assert distill["activities"] == {"backward": 0.4, "teacher forward": 0.3,
                                     "optimizer step": 0.1}
    assert result["stages"]["search"]["activities"] == {"evaluation": 0.1}
    assert result["stages"]["importance ordering"]["activities"] == {"forward": 0.1}


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


def test_campaign_status_counts_the_running_stage_s_progress(tmp_path):
    """The running item's estimate leaves out the share of its stage that the log shows
    finished."""
    _rte_stages_recorded(tmp_path)

    def sst2_a_line() -> str:
        done = subprocess.run([sys.executable, "benchmarks/campaign.py", "status"], cwd=REPO,
                              capture_output=True, text=True, timeout=120,
                              env=_bench_env(tmp_path))
        assert done.returncode == 0, done.stderr[-3000:]
        return next(line for line in done.stdout.splitlines()
                    if line.split()[:1] == ["mpnet-base-sst2-s0-a"])

    home = tmp_path / "home"
    home.mkdir()
    # SST-2 arm (a) in flight: its teacher (7,200 x 2 epochs at 3.0/s: 4,800 s) half done
    # and the search (1,606 s as in the test above): 0.5 x 4,800 + 1,606 s = 1.1 h
    (home / "campaign.lock").write_text(json.dumps(
        {"pid": os.getpid(), "item": "mpnet-base-sst2-s0-a", "start": 0}))
    line = sst2_a_line()
    assert "~1.8 h" in line and "running" in line  # no progress line yet
    (tmp_path / "campaign.log").write_text(
        "fine-tuning: 450/900 after 2400 s, loss 0.4\nepoch 1: search accuracy 0.8\n")
    assert "~1.1 h" in sst2_a_line()
