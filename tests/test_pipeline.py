"""`nasprune run` end to end on a tiny random model and toy GLUE-shaped rows (fast tests:
`make test-fast` runs every stage, super-network distillation included)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nasprune.config import RunConfig, SearchConfig, TrainConfig
from nasprune.data.tasks import DataConfig
from nasprune.pipeline import run
from nasprune.rundir import RunDir


def tiny_run_config(model_dir, toy_glue, **search) -> RunConfig:
    return RunConfig(
        model=str(model_dir),
        data=DataConfig(task="sst2", data_dir=str(toy_glue), max_train_examples=128,
                        max_eval_examples=64),
        train=TrainConfig(epochs=1, batch_size=16, progress=False),
        search=SearchConfig(**{"trials": 12, "calibration_examples": 32, **search}),
        pick="params<=0.9", recover_epochs=1, force=True,  # a random model learns little
    )


def test_run_end_to_end_then_resume_skips_finished_stages(tmp_path, tiny_model_dir,
                                                          toy_glue):
    import torch

    from nasprune.core.subnet import Subnet
    from nasprune.core.supernet import Supernet
    from nasprune.data.encode import batches, encode
    from nasprune.data.tasks import load_task_data
    from nasprune.deploy.export.loader import load

    cfg = tiny_run_config(tiny_model_dir, toy_glue)
    cfg.train.strategy_options = {"batch_size": 8}  # --supernet-batch-size
    first = run(cfg, tmp_path, progress=False)
    assert first["trials"] == 12 and first["evaluated_now"] == 12
    supertrained = json.loads((tmp_path / "supertrain" / "metrics.json").read_text())["config"]
    assert (supertrained["batch_size"], supertrained["learning_rate"]) == (8, 2.5e-5)
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
    assert RunDir(tmp_path).config().search.trials == 16

    # other recovery options redo the export only: --recover-batch-size, --recover-scaled
    cfg.recover_batch_size, cfg.recover_scaled = 32, True  # 1 epoch at half size: 0.5 / f
    third = run(cfg, tmp_path, progress=False)
    assert third["evaluated_now"] == 0 and weights.stat().st_mtime_ns == stamp
    recovered = json.loads((Path(third["export_dir"]) / "recovery.json").read_text())["config"]
    assert (recovered["batch_size"], recovered["learning_rate"]) == (32, 1e-4)
    kept = third["pick"]["encoder_params_fraction"]
    assert recovered["epochs"] == pytest.approx(0.5 / max(kept, 1 / 6))


def test_recovery_of_the_pick_is_reported_and_keeps_the_shape(tmp_path, tiny_model_dir,
                                                               toy_glue):
    from nasprune.deploy.export.loader import load

    cfg = tiny_run_config(tiny_model_dir, toy_glue)
    cfg.recover = "least-squares"
    record = run(cfg, tmp_path, progress=False)
    assert set(record["recovery"]) == {"method", "before_search", "after_search",
                                       "before_validation", "after_validation"}
    exported = load(record["export_dir"], backend="torch")
    assert sum(p.numel() for p in exported.model.parameters()) == record["pick"]["params"]
    again = run(cfg, tmp_path, progress=False)  # the export is reused with its report
    assert again["recovery"] == record["recovery"] and again["evaluated_now"] == 0
    with pytest.raises(Exception, match="unknown recovery"):
        RunConfig(recover="magic")
    with pytest.raises(Exception, match="cannot read the pick rule"):
        RunConfig(pick="params=half")
    assert RunConfig(pick="#3").pick == "#3" and RunConfig(pick="latency<=12ms")


def test_a_run_directory_of_other_data_is_refused(tmp_path, tiny_model_dir, toy_glue):
    cfg = tiny_run_config(tiny_model_dir, toy_glue)
    run(cfg, tmp_path, progress=False, until="finetune")
    cfg.data.task = "rte"
    with pytest.raises(Exception, match=r"finetune stage made with other options: --task "
                                         r"\('sst2' -> 'rte'\)"):
        run(cfg, tmp_path, progress=False, until="finetune")


def test_cli_run_and_search_commands(tmp_path, tiny_model_dir, toy_glue):
    base = [sys.executable, "-m", "nasprune"]
    common = ["--model", str(tiny_model_dir), "--task", "sst2", "--data-dir", str(toy_glue),
              "--max-train-examples", "64", "--max-eval-examples", "32", "--epochs", "1",
              "--max-length", "64", "--run-dir", str(tmp_path), "--force"]
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


def test_supernet_distillation_runs_after_the_teacher_and_feeds_the_search(
        tmp_path, tiny_model_dir, toy_glue):
    cfg = tiny_run_config(tiny_model_dir, toy_glue)
    cfg.train.strategy = "distill"
    cfg.train.strategy_options = {"k": 1, "epochs": 1}
    cfg.pick = "encoder_params<=0.5"
    cfg.recover = "none"
    record = run(cfg, tmp_path, progress=False)
    teacher = json.loads((tmp_path / "finetune" / "metrics.json").read_text())
    assert teacher["config"]["strategy"] == "standard"  # the teacher is fine-tuned plainly
    info = json.loads((tmp_path / "supertrain" / "model" / "supernet.json").read_text())
    assert info["strategy"] == "distill" and info["options"]["budget"] == 0.5
    assert (tmp_path / "supernet" / "order.json").is_file()
    assert record["split"] == "search" and record["pick"]["split"] == "search"
    assert set(record["exported"]) == {"search", "validation"}


def test_summary_names_the_split_of_every_figure(tmp_path, tiny_model_dir, toy_glue):
    cfg = tiny_run_config(tiny_model_dir, toy_glue)
    record = run(cfg, tmp_path, progress=False)
    data_split = record["split"]
    assert data_split == "search"
    assert set(record["unpruned"]) == {"search", "validation"}
    finetune = json.loads((tmp_path / "finetune" / "metrics.json").read_text())
    assert finetune["selected_on"] == "search" and finetune["search_examples"] == 64
    assert record["unpruned"]["search"] == record["full"]["metric"]  # the same model
    header = (tmp_path / "search" / "pareto.csv").read_text().splitlines()[0]
    assert "split" in header
    exported = json.loads((tmp_path / "export" / "metrics.json").read_text())
    assert exported["validation"]["float"]["accuracy"] == record["exported"]["validation"]


def test_sanity_guard_stops_a_constant_predictor_before_the_search(tmp_path, tiny_model_dir,
                                                                    toy_glue):
    cfg = tiny_run_config(tiny_model_dir, toy_glue)
    cfg.force = False
    with pytest.raises(Exception, match="learned nothing on the search split"):
        run(cfg, tmp_path, progress=False)
    assert not (tmp_path / "search").exists() and not (tmp_path / "export").exists()


def test_search_guard_fires_when_nothing_beats_the_smallest_sub_network():
    from types import SimpleNamespace

    from nasprune.errors import NaspruneError
    from nasprune.pipeline.stages import check_search

    def trial(name, fraction, error):
        return SimpleNamespace(subnet=name, metrics={"encoder_params": fraction, "error": error})

    flat = [trial("0/0", 0.0, 0.49), trial("12/1536", 1.0, 0.49), trial("6/768", 0.5, 0.51)]
    with pytest.raises(NaspruneError, match="no sub-network beats the smallest one"):
        check_search(flat, force=False)
    check_search(flat, force=True)  # --force goes on
    check_search([trial("0/0", 0.0, 0.49), trial("12/1536", 1.0, 0.12)], force=False)


def test_trivial_reason_fires_on_constant_and_majority_predictors_only():
    import numpy as np

    from nasprune.data.presets import PRESETS
    from nasprune.train.evaluation import trivial_reason

    sst2 = PRESETS["sst2"]
    labels = np.array([1, 1, 1, 0])
    constant = np.array([[0.0, 1.0]] * 4)
    assert "one class" in trivial_reason(sst2, constant, labels)
    wrong = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # 1 of 4 right
    assert "does not beat" in trivial_reason(sst2, wrong, labels)
    good = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert trivial_reason(sst2, good, labels) is None
    stsb = PRESETS["stsb"]
    assert trivial_reason(stsb, np.full((4, 1), 2.5), labels.astype(float)) is not None
    assert trivial_reason(stsb, np.arange(4.0)[:, None], labels.astype(float)) is None


def test_the_python_api_example_runs(tmp_path, tiny_model_dir, toy_glue):
    """examples/api.py, the documented API example, end to end on a tiny model."""
    from conftest import REPO

    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "api.py"), "--model", str(tiny_model_dir),
         "--data-dir", str(toy_glue), "--run-dir", str(tmp_path / "run"), "--train", "128",
         "--trials", "6", "--force"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "validation accuracy" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("['")
