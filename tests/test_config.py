"""The configuration resolves a run's strategy options once: the Python API and the CLI
train the space they search, and record the same options."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nasprune.cli import app
from nasprune.config import SUPERNET_EPOCHS, DataConfig, RunConfig, SearchConfig, TrainConfig
from nasprune.errors import NaspruneError
from nasprune.pipeline import run
from nasprune.rundir import RunDir
from nasprune.rundir.fingerprints import fingerprints
from nasprune.train.strategies import needs_teacher


def test_a_supernet_strategy_samples_the_space_the_search_uses():
    cfg = RunConfig(train=TrainConfig(strategy="sandwich"),
                    search=SearchConfig(space="small", unit_step=32, any_heads=True))
    assert cfg.strategy_options() == {"space": "small", "unit_step": 32, "any_heads": True}
    assert cfg.training().strategy_options == cfg.strategy_options()
    distill = RunConfig(search=SearchConfig(space="layer", importance="magnitude"),
                        pick="encoder_params<=0.4")  # auto: distill in a run
    assert distill.strategy_options() == {
        "space": "layer", "unit_step": 64, "any_heads": False, "importance": "magnitude",
        "calibration_examples": 512, "budget": 0.4, "epochs": SUPERNET_EPOCHS}
    given = RunConfig(train=TrainConfig(strategy="sandwich", strategy_options={
        "space": "layer", "k": 1}), search=SearchConfig(space="small"))
    assert given.strategy_options()["space"] == "layer"  # options given win
    assert given.strategy_options()["k"] == 1
    assert RunConfig(train=TrainConfig(strategy="standard")).strategy_options() == {}


def test_distillation_stages_take_their_own_batch_with_a_scaled_learning_rate(monkeypatch):
    """--supernet-batch-size and --recover-batch-size: more examples per step (faster on a
    CPU, benchmarks/results/step_speed.md) with the learning rate scaled linearly."""
    from nasprune.train.recovery.recover import RecoveryConfig

    default = RunConfig().supertraining()
    assert (default.batch_size, default.learning_rate, default.epochs) == (16, 5e-5, 1.0)
    wide = RunConfig(train=TrainConfig(learning_rate=4e-5, strategy_options={
        "batch_size": 64})).supertraining()
    assert (wide.batch_size, wide.learning_rate) == (64, pytest.approx(1.6e-4))
    assert wide.strategy_options["batch_size"] == 64 and wide.epochs == SUPERNET_EPOCHS
    assert RecoveryConfig().learning_rate == 5e-5
    assert RecoveryConfig(batch_size=32).learning_rate == pytest.approx(1e-4)
    assert RecoveryConfig(batch_size=32, learning_rate=3e-5).learning_rate == 3e-5
    with pytest.raises(NaspruneError, match="recover-batch-size must be at least 1"):
        RunConfig(recover_batch_size=0)
    built = []  # what `nasprune run` hands the pipeline

    monkeypatch.setattr("nasprune.pipeline.run", lambda cfg, *a, **k: built.append(cfg) or {})
    monkeypatch.setattr("nasprune.cli.run.print_summary", lambda *a: None)
    done = CliRunner().invoke(app, ["-q", "run", "--task", "sst2", "--supernet-batch-size",
                                    "32", "--recover-batch-size", "48"])
    assert done.exit_code == 0, done.output
    assert built[0].supertraining().batch_size == 32 and built[0].recover_batch_size == 48


def test_scaled_recovery_gives_smaller_picks_more_epochs_for_the_same_compute():
    plain, scaled = RunConfig(), RunConfig(recover_scaled=True)
    assert [plain.recovery_epochs(f) for f in (1.0, 0.5, 0.2)] == [3.0, 3.0, 3.0]
    assert [scaled.recovery_epochs(f) for f in (1.0, 0.5, 0.3, 0.2)] == pytest.approx(
        [1.5, 3.0, 5.0, 7.5])
    assert scaled.recovery_epochs(0.1) == scaled.recovery_epochs(1 / 6) == pytest.approx(9.0)


def test_options_are_resolved_again_when_the_search_changes():
    """Nothing resolved is stored: a changed search changes what the strategy samples."""
    import dataclasses

    cfg = RunConfig(train=TrainConfig(strategy="random-linear"))
    other = dataclasses.replace(cfg, search=SearchConfig(space="uniform"))
    assert other.strategy_options()["space"] == "uniform"
    assert cfg.train.strategy_options == {} and other.train.strategy_options == {}


@pytest.mark.parametrize("strategy", ["sandwich", "distill"])
def test_the_api_and_the_cli_record_the_same_run(strategy, tmp_path, tiny_model_dir, toy_glue):
    api = RunConfig(model=str(tiny_model_dir),
                    data=DataConfig(task="sst2", data_dir=str(toy_glue)),
                    train=TrainConfig(epochs=1, strategy=strategy, progress=False,
                                      max_length=64),  # the tiny model's positions
                    search=SearchConfig(space="small", calibration_examples=32), force=True)
    run(api, tmp_path / "api", progress=False, until="finetune")
    done = CliRunner().invoke(app, [
        "-q", "run", "--model", str(tiny_model_dir), "--task", "sst2", "--data-dir",
        str(toy_glue), "--epochs", "1", "--max-length", "64", "--strategy", strategy,
        "--space", "small",
        "--calibration-examples", "32", "--force", "--until", "finetune",
        "--run-dir", str(tmp_path / "cli")])
    assert done.exit_code == 0, done.output
    by_api, by_cli = RunDir(tmp_path / "api").config(), RunDir(tmp_path / "cli").config()
    assert by_api.strategy_options() == by_cli.strategy_options()
    assert by_api.strategy_options()["space"] == "small"
    assert fingerprints(by_api) == fingerprints(by_cli)  # every stage, the later ones too
    recorded = [json.loads((tmp_path / side / "fingerprints.json").read_text())
                for side in ("api", "cli")]
    assert recorded[0] == recorded[1] and "finetune" in recorded[0]
    if not needs_teacher(strategy):  # the super-network was trained on the searched space
        for side in ("api", "cli"):
            info = json.loads((tmp_path / side / "finetune" / "model" / "supernet.json")
                              .read_text())
            assert info["options"]["space"] == "small" and info["space"]["space"] == "small"
        api.search.space = "layerwise"  # ... so searching another one is refused by name
        with pytest.raises(NaspruneError, match=r"finetune stage made with other options: "
                                                r"--space \('small' -> 'layerwise'\)"):
            run(api, tmp_path / "api", progress=False, until="search")


def test_every_flag_of_a_run_is_declared_on_its_field_and_nothing_else():
    """One declaration per option (``config.options.option``): the flags of ``nasprune run``
    are exactly the declared ones plus the command's own, and each declared stage is a
    stage of the run directory."""
    import typer

    from nasprune.config import OPTIONS
    from nasprune.rundir import ORDER

    command = typer.main.get_command(app).commands["run"]
    flags = {flag for p in command.params for flag in p.opts}
    declared = ({o.flag for o in OPTIONS.values() if o.flag}
                | {f for o in OPTIONS.values() for f in o.sub_flags.values()})
    assert declared <= flags
    assert flags - declared == {"--config", "--run-dir", "--until", "--redo"}
    assert {o.stage for o in OPTIONS.values()} - {None} <= set(ORDER)


def test_a_field_that_declares_nothing_is_refused():
    from dataclasses import dataclass

    from nasprune.config.options import options

    @dataclass
    class Undeclared:
        x: int = 0

    with pytest.raises(TypeError, match="Undeclared.x does not declare"):
        options(Undeclared)


def test_the_default_run_keeps_its_fingerprints():
    """Stages made by an earlier version with the same options are reused: the hashes of
    the default run are pinned (a change here makes every existing run directory stale:
    the last one came with --precision and the maximum length chosen from the data; the
    export's with --recover-batch-size and --recover-scaled, which makes a rerun redo only the
    export)."""
    assert {k: v["hash"] for k, v in fingerprints(RunConfig()).items()} == {
        "finetune": "51cdfa54c4af96fc", "supertrain": "d0a8aa49c411cf32",
        "supernet": "1a6a6b4120ec1c0d", "search": "2aaf2fa492f54e1b",
        "export": "773cd0c386eb6727"}
