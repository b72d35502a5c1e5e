"""``nasprune export RUN`` refuses what it should, in one line: a pick no better than the
majority class of the search split (unless ``--force``), and a run directory another
process is writing (naming no option that ``export`` lacks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_export import make_supernet

from nasprune.config import RunConfig
from nasprune.core.subnet import Subnet
from nasprune.data.tasks import DataConfig, load_task_data
from nasprune.errors import NaspruneError
from nasprune.pipeline.export import export_pick

from conftest import tiny_tokenizer

SMALLEST = Subnet(((1, 16),) * 4)


@pytest.fixture()
def run(tmp_path, toy_glue):
    """A run directory of the toy GLUE data whose smallest trial scored 0.30 on the search
    split (below its majority class), the full one 0.95."""
    from nasprune.search.store import TrialStore

    sn = make_supernet()
    run = tmp_path / "run"
    sn.save(run / "supernet")
    tiny_tokenizer().save_pretrained(run / "supernet")
    cfg = RunConfig(data=DataConfig(task="sst2", data_dir=str(toy_glue)), recover="none")
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    with TrialStore.for_run(run) as store:
        store.set_meta("objectives", ["error", "params"])
        store.set_meta("full_subnet", sn.shape.full.to_json())
        store.add(sn.shape.full, {"error": 0.05, "metric": 0.95, "params": 1000.0})
        store.add(SMALLEST, {"error": 0.70, "metric": 0.30, "params": 200.0})
    return run


def test_a_pick_below_the_majority_class_is_refused_unless_forced(run):
    search = load_task_data(RunConfig.from_dict(json.loads(
        (run / "config.json").read_text())).data).search
    majority = search["label"].value_counts(normalize=True).max()
    with pytest.raises(NaspruneError, match=(
            rf"trial 2 .*: its search accuracy 0\.300 does not beat always predicting the "
            rf"most frequent class \({majority:.3f}\); pick a larger sub-network, or pass "
            "--force")):
        export_pick(run, "smallest", validate=False)
    assert not (run / "export").exists()  # refused before any work
    forced = export_pick(run, "smallest", validate=False, force=True)
    assert json.loads((forced / "subnet.json").read_text())["text"] == str(SMALLEST)


def test_export_on_a_run_directory_in_use(run):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from nasprune.rundir import lock\nlock.take(Path(sys.argv[1]))\n"
         "print('held', flush=True)\ntime.sleep(120)", str(run)],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = subprocess.run([sys.executable, "-m", "nasprune", "export", str(run)],
                                capture_output=True, text=True, timeout=120, env=env)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"is in use by nasprune (PID {holder.pid})" in lines[0]
    assert "--run-dir" not in lines[0]  # export has no such option
