"""Run directories that never lie: stage fingerprints, --redo, absolute paths, one writer,
runs described in a file, the log."""

import copy
import json
import shutil
import subprocess
import sys

import pytest
from test_pipeline import tiny_run_config

from nasprune.errors import NaspruneError
from nasprune.pipeline import run
from nasprune.rundir import RunDir


def nasprune(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "nasprune", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir, toy_glue):
    """A finished tiny run (fine-tune, search, export) to rerun with other options."""
    run_dir = tmp_path_factory.mktemp("finished")
    cfg = tiny_run_config(tiny_model_dir, toy_glue)
    cfg.recover = "none"
    record = run(cfg, run_dir, progress=False)
    return run_dir, cfg, record


def _copy(finished, tmp_path):
    run_dir, cfg, record = finished
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target, copy.deepcopy(cfg), record


def test_changed_training_options_are_refused_naming_them(finished, tmp_path):
    run_dir, cfg, _ = _copy(finished, tmp_path)
    before = (run_dir / "config.json").read_text()
    cfg.train.epochs, cfg.train.learning_rate = 3, 1e-4
    with pytest.raises(NaspruneError, match=r"--epochs \(1 -> 3\), --lr \(5e-05 -> 0.0001\)"):
        run(cfg, run_dir, progress=False)
    assert (run_dir / "config.json").read_text() == before  # nothing recorded


def test_other_data_is_refused_and_redo_recomputes(finished, tmp_path):
    run_dir, cfg, _ = _copy(finished, tmp_path)
    cfg.data.max_train_examples = 96
    with pytest.raises(NaspruneError, match="--max-train-examples"):
        run(cfg, run_dir, progress=False, until="finetune")
    record = run(cfg, run_dir, progress=False, until="finetune", redo="finetune")
    metrics = json.loads((run_dir / "finetune" / "metrics.json").read_text())
    assert metrics["train_examples"] + metrics["search_examples"] <= 96
    assert record["task"] == "sst2"
    assert not (run_dir / "search").exists()  # later stages went with it
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["data"]["max_train_examples"] == 96


def test_a_changed_search_space_is_refused_more_trials_resume(finished, tmp_path):
    run_dir, cfg, record = _copy(finished, tmp_path)
    cfg.search.space = "small"  # the run's super-network distillation sampled the old space:
    with pytest.raises(NaspruneError,  # the first stage that depends on it is refused
                       match=r"supertrain stage made with other options: --space"):
        run(cfg, run_dir, progress=False, until="search")
    cfg.search.space = "layerwise"
    cfg.search.trials = record["trials"] + 2
    again = run(cfg, run_dir, progress=False, until="search")
    assert again["evaluated_now"] == 2


def test_post_search_options_produce_the_export_they_ask_for(finished, tmp_path):
    run_dir, cfg, _ = _copy(finished, tmp_path)
    cfg.export_formats, cfg.quantize = ("hf", "onnx"), "int8"
    record = run(cfg, run_dir, progress=False)
    assert record["evaluated_now"] == 0
    assert (run_dir / "export" / "model.onnx").is_file()
    assert (run_dir / "export" / "model.int8.onnx").is_file() or any(
        p.name.endswith(".onnx") and "int8" in p.name for p in (run_dir / "export").iterdir())
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["quantize"] == "int8" and saved["export_formats"] == ["hf", "onnx"]


def test_a_second_writer_is_refused_at_once(finished, tmp_path):
    run_dir, cfg, _ = _copy(finished, tmp_path)
    holder = subprocess.Popen(  # another process holds the run directory
        [sys.executable, "-c", "import sys, time\nfrom nasprune.rundir import RunDir\n"
         f"RunDir({str(run_dir)!r}).lock()\nprint('held', flush=True)\ntime.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(NaspruneError, match=rf"in use by nasprune \(PID {holder.pid}\)"):
            run(cfg, run_dir, progress=False)
    finally:
        holder.kill()
        holder.wait()
    run(cfg, run_dir, progress=False, until="finetune")  # free again once it is gone
    holder_again = RunDir(run_dir).lock()  # the same process may take it twice (CLI, then
    inner = RunDir(run_dir).lock()         # the pipeline), and frees it when both let go
    inner.release()
    holder_again.release()
    assert not RunDir(run_dir).lock().release()


def test_log_tells_the_story(finished):
    run_dir, _, _ = finished
    log = (run_dir / "log.txt").read_text()
    assert "run until export" in log
    for stage in ("finetune", "supernet", "search", "export"):
        assert f"stage {stage}:" in log
    assert "done in" in log


def test_a_moved_run_directory_is_exported_from_a_third_folder(finished, tmp_path):
    run_dir, cfg, _ = finished
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["data"]["data_dir"].startswith("/") and saved["model"].startswith("/")
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(run_dir, moved)
    third = tmp_path / "third"
    third.mkdir()
    result = nasprune("export", moved, "--pick", "largest", "--out", tmp_path / "out",
                      "--force", cwd=third)  # a tiny random model: no better than chance
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_a_failed_first_command_leaves_no_run_directory(tmp_path):
    target = tmp_path / "r0"
    result = nasprune("run", "--train-file", "reviews.csv", "--run-dir", target, cwd=tmp_path)
    assert result.returncode == 2 and not target.exists()


def test_config_file_keys_are_the_flags_or_their_parameter_names(tmp_path):
    """``lr`` and ``learning_rate`` both set ``--lr``; a run's config.json gives back every
    data flag, ``--drop-invalid`` included."""
    import typer

    from nasprune.cli import app
    from nasprune.cli.config_file import read_config_file
    from nasprune.cli.run import config_keys

    names = config_keys(typer.main.get_command(app).commands["run"])
    toml = tmp_path / "run.toml"
    toml.write_text('lr = 1e-4\nformat = "onnx"\nmax-train-examples = 64\n'
                    'calibration_examples = 32\ndrop-invalid = true\n')
    assert read_config_file(toml, names) == {
        "learning_rate": 1e-4, "export_format": "onnx", "max_train_examples": 64,
        "calibration_examples": 32, "drop_invalid": True}
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps({"data": {"task": "sst2", "drop_invalid": True},
                                 "train": {}, "search": {}}))
    assert read_config_file(saved, names) == {"task": "sst2", "drop_invalid": True}


def test_config_file_flags_override_and_replay_gives_the_same_trials(tmp_path, tiny_model_dir,
                                                                     toy_glue):
    toml = tmp_path / "run.toml"
    toml.write_text(f'model = "{tiny_model_dir}"\ntask = "sst2"\ndata-dir = "{toy_glue}"\n'
                    'max-train-examples = 128\nmax_eval_examples = 64\nepochs = 1\n'
                    'max-length = 64\n'
                    'trials = 20\ncalibration-examples = 32\nspace = "small"\n'
                    'searcher = "random"\nforce = true\nrecover = "none"\n')
    first = tmp_path / "first"
    result = nasprune("run", "--config", toml, "--trials", 6, "--until", "search",
                      "--run-dir", first)
    assert result.returncode == 0, result.stderr
    saved = json.loads((first / "config.json").read_text())
    assert saved["search"]["trials"] == 6 and saved["search"]["space"] == "small"  # flag won
    again = tmp_path / "again"
    result = nasprune("run", "--config", first / "config.json", "--until", "search",
                      "--run-dir", again)
    assert result.returncode == 0, result.stderr
    replayed = json.loads((again / "config.json").read_text())
    assert replayed == saved
    first_trials = json.loads((first / "summary.json").read_text())
    again_trials = json.loads((again / "summary.json").read_text())
    assert first_trials["pick"]["subnet"] == again_trials["pick"]["subnet"]
    from nasprune.search.store import TrialStore

    def trials(path):
        with TrialStore.open_existing(path) as store:
            return [(str(t.subnet), round(t.metrics["error"], 6)) for t in store.trials()]

    assert trials(first) == trials(again)


def test_export_of_a_run_recovers_as_the_run_would_and_reuses_its_own_export(finished,
                                                                              tmp_path):
    """``nasprune export RUN`` goes through the export stage: the run's recovery (or the
    one asked for), and RUN/export reused only when it was made with the same options."""
    from nasprune.deploy.export.loader import load
    from nasprune.pipeline.export import export_pick

    run_dir, _, _ = _copy(finished, tmp_path)  # a run made with --recover none
    # a tiny random model's picks are no better than chance: forced, as --force would
    out = export_pick(run_dir, "largest", recover="least-squares", force=True)
    assert out == run_dir / "export"
    report = json.loads((out / "recovery.json").read_text())
    assert report["config"]["method"] == "least-squares" and report["after"]
    written = (out / "manifest.json").stat().st_mtime_ns
    assert export_pick(run_dir, "largest", recover="least-squares", force=True) == out
    assert (out / "manifest.json").stat().st_mtime_ns == written  # same options: reused
    export_pick(run_dir, "largest", force=True)  # the run's own --recover none: written again
    assert not (out / "recovery.json").exists()
    assert load(out).metrics["search"]["trial"] >= 1


def test_the_maximum_length_is_chosen_from_the_data_and_said(finished):
    """No --max-length: the 99th percentile of the training lengths (a multiple of 8, at
    most the model's 64 positions) is resolved before the fingerprints, recorded in the
    run's config, its summary and its log; a rerun resolves the same and reuses the run
    (the other tests here rerun it so)."""
    run_dir, cfg, record = finished
    assert cfg.train.max_length is None
    tokens = record["max_length"]["tokens"]
    assert record["max_length"]["chosen"].startswith("99th percentile")
    assert tokens % 8 == 0 and 8 <= tokens <= 64
    assert json.loads((run_dir / "config.json").read_text())["train"]["max_length"] == tokens
    assert f"maximum length {tokens} tokens" in (run_dir / "log.txt").read_text()
