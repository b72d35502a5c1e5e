"""`nasprune run` end to end on a tiny random model and real SST-2 rows."""

import json
import subprocess
import sys

import pytest

from nasprune.data import DataConfig
from nasprune.pipeline import RunConfig, SearchConfig, config_of_run, run
from nasprune.training import TrainConfig


def tiny_run_config(model_dir, shared_data, **search) -> RunConfig:
    return RunConfig(
        model=str(model_dir),
        data=DataConfig(task="sst2", data_dir=str(shared_data), max_train_examples=128,
                        max_eval_examples=64),
        train=TrainConfig(epochs=1, batch_size=16, progress=False),
        search=SearchConfig(**{"trials": 12, "calibration_examples": 32, **search}),
        pick="params<=0.9",
    )


def test_run_end_to_end_then_resume_skips_finished_stages(tmp_path, tiny_model_dir,
                                                          shared_data):
    import torch

    from nasprune.data import batches, encode, load_task_data
    from nasprune.export import load
    from nasprune.subnet import Subnet
    from nasprune.supernet import Supernet

    cfg = tiny_run_config(tiny_model_dir, shared_data)
    first = run(cfg, tmp_path, progress=False)
    assert first["trials"] == 12 and first["evaluated_now"] == 12
    assert (tmp_path / "supernet" / "order.json").is_file()
    assert (tmp_path / "search" / "pareto.png").stat().st_size > 0
    assert first["pick"]["params_fraction"] <= 0.9
    # the export is the picked sub-network, physically smaller, computing what use() computed
    exported = load(first["export_dir"], backend="torch")
    picked = Subnet(tuple(map(tuple, first["pick"]["subnet"]["layers"])))
    assert exported.subnet == picked
    assert sum(p.numel() for p in exported.model.parameters()) == first["pick"]["params"]
    supernet = Supernet.from_pretrained(tmp_path / "supernet")
    data = load_task_data(cfg.data)
    batch = next(iter(batches(encode(exported.tokenizer, data, "validation"), 8)))
    batch.pop("labels")
    with torch.inference_mode(), supernet.use(picked) as model:
        expected = model.eval()(**batch).logits
    assert torch.allclose(exported.model.eval()(**batch).logits, expected, atol=1e-4)
    weights = tmp_path / "finetune" / "model" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns

    cfg.search.trials = 16  # more trials: only the new ones are evaluated
    second = run(cfg, tmp_path, progress=False, until="search")
    assert second["trials"] == 16 and second["evaluated_now"] == 4
    assert weights.stat().st_mtime_ns == stamp  # fine-tuning was not repeated
    assert config_of_run(tmp_path).search.trials == 16


def test_recovery_of_the_pick_is_reported_and_keeps_the_shape(tmp_path, tiny_model_dir,
                                                               shared_data):
    from nasprune.export import load

    cfg = tiny_run_config(tiny_model_dir, shared_data)
    cfg.recover = "least-squares"
    record = run(cfg, tmp_path, progress=False)
    assert set(record["recovery"]) == {"method", "before", "after"}
    exported = load(record["export_dir"], backend="torch")
    assert sum(p.numel() for p in exported.model.parameters()) == record["pick"]["params"]
    again = run(cfg, tmp_path, progress=False)  # the export is reused with its report
    assert again["recovery"] == record["recovery"] and again["evaluated_now"] == 0
    with pytest.raises(Exception, match="unknown recovery"):
        RunConfig(recover="magic")
    with pytest.raises(Exception, match="cannot read the pick rule"):
        RunConfig(pick="params=half")
    assert RunConfig(pick="#3").pick == "#3" and RunConfig(pick="latency<=12ms")


def test_a_run_directory_of_other_data_is_refused(tmp_path, tiny_model_dir, shared_data):
    cfg = tiny_run_config(tiny_model_dir, shared_data)
    run(cfg, tmp_path, progress=False, until="finetune")
    cfg.data.task = "rte"
    with pytest.raises(Exception, match="another model or data set"):
        run(cfg, tmp_path, progress=False, until="finetune")


def test_cli_run_and_search_commands(tmp_path, tiny_model_dir, shared_data):
    base = [sys.executable, "-m", "nasprune"]
    common = ["--model", str(tiny_model_dir), "--task", "sst2", "--data-dir", str(shared_data),
              "--max-train-examples", "64", "--max-eval-examples", "32", "--epochs", "1",
              "--run-dir", str(tmp_path)]
    done = subprocess.run([*base, "run", *common, "--until", "finetune"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*base, "search", str(tmp_path), "--space", "small", "--searcher",
                           "random", "--trials", "5", "--calibration-examples", "16"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "sub-networks evaluated" in done.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["trials"] == 5 and summary["space"] == "small"  # of 6 in this space
    bad = subprocess.run([*base, "search", str(tmp_path / "nowhere")], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "not a run directory" in bad.stderr
