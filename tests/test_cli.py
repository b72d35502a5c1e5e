"""The command line: every user mistake it knows is one line on stderr and exit code 2,
refused before any work starts (nothing written, torch never loaded), never a traceback.

``MISTAKES`` is also the table in docs/cli.md (a test checks that they agree)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

DATA = "{data}"  # the toy GLUE folder (conftest.toy_glue): mistakes need no real data
SST2 = ["--task", "sst2", "--data-dir", DATA]


def nasprune(*args, timeout=120, cwd=None):
    return subprocess.run([sys.executable, "-m", "nasprune", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                               "PATH": "/usr/bin:/bin", "COLUMNS": "200"})


def _files(tmp: Path) -> dict[str, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    good = tmp / "good.tsv"
    good.write_text("sentence\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(40)))
    (tmp / "labels.tsv").write_text("sentence\tlabel\na\t0\nb\t2\n")
    (tmp / "empty.csv").write_text("")
    (tmp / "bad-key.toml").write_text('task = "sst2"\nepoch = 2\n')
    (tmp / "broken.toml").write_text('task = "sst2\n')
    run = tmp / "corrupt-run"
    run.mkdir(exist_ok=True)
    (run / "config.json").write_text("{not json")
    keys = tmp / "keys-run"
    keys.mkdir(exist_ok=True)
    (keys / "config.json").write_text(json.dumps({"model": "m", "data": {"tsk": "sst2"}}))
    return {"good": good, "labels": tmp / "labels.tsv", "empty": tmp / "empty.csv",
            "bad_key": tmp / "bad-key.toml", "broken": tmp / "broken.toml",
            "corrupt": run, "keys": keys}


#: (id, arguments with {placeholders}, a fragment of the one-line message)
MISTAKES = [
    ("unknown task", ["run", "--task", "sst3"], "'sst3' is not one of"),
    ("unknown search space", ["run", *SST2, "--space", "foo"], "'foo' is not one of"),
    ("unknown searcher", ["run", *SST2, "--searcher", "nsga3"], "'nsga3' is not one of"),
    ("unknown importance", ["run", *SST2, "--importance", "gain"], "'gain' is not one of"),
    ("unknown strategy", ["run", *SST2, "--strategy", "magic"], "'magic' is not one of"),
    ("unknown recovery", ["run", *SST2, "--recover", "magic"], "'magic' is not one of"),
    ("unknown quantization", ["run", *SST2, "--quantize", "int4"], "'int4' is not one of"),
    ("unknown export format", ["run", *SST2, "--format", "hf,tflite"],
     "unknown export format 'tflite'"),
    ("unknown backend", ["run", *SST2, "--backend", "slurm"], "'slurm' is not one of"),
    ("unknown stage to redo", ["run", *SST2, "--redo", "train"], "'train' is not one of"),
    ("unknown stage to stop at", ["run", *SST2, "--until", "serve"], "'serve' is not one of"),
    ("malformed pick rule", ["run", *SST2, "--pick", "params=half"], "cannot read the pick rule"),
    ("bad objectives", ["run", *SST2, "--objectives", "error,size"], "objectives: 'error'"),
    ("zero epochs", ["run", *SST2, "--epochs", "0"], "epochs and learning rate must be positive"),
    ("zero batch size", ["run", *SST2, "--batch-size", "0"], "--batch-size must be at least 1"),
    ("zero max length", ["run", *SST2, "--max-length", "0"], "--max-length must be at least 1"),
    ("warm-up out of range", ["run", *SST2, "--warmup-ratio", "1.5"], "warmup ratio must be in"),
    ("zero trials", ["run", *SST2, "--trials", "0"], "--trials must be at least 1"),
    ("zero unit step", ["run", *SST2, "--unit-step", "0"], "--unit-step must be at least 1"),
    ("zero workers", ["run", *SST2, "--workers", "0"], "--workers must be at least 1"),
    ("low fidelity out of range", ["run", *SST2, "--low-fidelity", "1.5"],
     "--low-fidelity must be a fraction"),
    ("zero search split", ["run", *SST2, "--search-split", "0"], "--search-split must be"),
    ("fractional search count", ["run", *SST2, "--search-split", "2.5"],
     "--search-split must be"),
    ("search split larger than the training set",
     ["run", *SST2, "--max-train-examples", "300", "--search-split", "5000"],
     "leaves no training examples"),
    ("negative recovery epochs", ["run", *SST2, "--recover-epochs", "-1"],
     "--recover-epochs must be >= 0"),
    ("unknown device", ["run", *SST2, "--device", "tpu"], "unknown device 'tpu'"),
    ("not a number", ["run", *SST2, "--trials", "many"], "Invalid value for '--trials'"),
    ("unknown option", ["run", *SST2, "--epoch", "2"], "No such option"),
    ("unknown command", ["prune"], "No such command"),
    ("only one custom file", ["run", "--train-file", "{good}"],
     "give both --train-file and --validation-file"),
    ("missing data file", ["run", "--train-file", "nope.tsv", "--validation-file", "nope.tsv",
                           "--text-columns", "sentence"], "data file not found"),
    ("empty data file", ["run", "--train-file", "{empty}", "--validation-file", "{empty}",
                         "--text-columns", "sentence"], "data file is empty"),
    ("custom data without text columns", ["run", "--train-file", "{good}",
                                          "--validation-file", "{good}"],
     "custom data needs --text-columns"),
    ("misspelled column", ["run", *SST2, "--text-columns", "sentense"],
     "did you mean 'sentence'"),
    ("label outside the label set", ["run", "--task", "sst2", "--train-file", "{labels}",
                                     "--validation-file", "{labels}"],
     "label 2 is not in the label set"),
    ("data dir without task", ["run", "--data-dir", DATA], "--data-dir needs --task"),
    ("data dir without the task's folder", ["run", "--task", "sst2", "--data-dir", "/nonexistent"],
     "no folder /nonexistent/sst2"),
    ("missing search file", [*["run", *SST2], "--search-file", "nope.tsv"], "data file not found"),
    ("no data source offline", ["run", "--task", "rte"], "no network"),
    ("missing model path", ["run", *SST2, "--model", "./missing"], "model path does not exist"),
    ("hub model offline", ["run", *SST2, "--max-train-examples", "300", "--model",
                           "no-such-org/no-such-model", "--epochs", "1"],
     "cannot load 'no-such-org/no-such-model'"),
    ("distill strategy without a teacher", ["finetune", *SST2, "--strategy", "distill"],
     "needs the fine-tuned model as its teacher"),
    ("missing config file", ["run", "--config", "nope.toml"], "config file not found"),
    ("unknown key in a config file", ["run", "--config", "{bad_key}"],
     "unknown key(s) 'epoch' (did you mean 'epochs'?)"),
    ("malformed config file", ["run", "--config", "{broken}"], "cannot read"),
    ("search on a folder that is no run", ["search", "{tmp}/nowhere"], "not a run directory"),
    ("corrupt config.json of a run", ["search", "{corrupt}"], "is not valid JSON"),
    ("config.json with unknown keys", ["search", "{keys}"], "unknown key(s) tsk"),
]


@pytest.mark.parametrize("args, message", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_user_mistakes_are_one_line_and_write_nothing(tmp_path, toy_glue, args, message):
    files = {k: str(v) for k, v in _files(tmp_path / "files").items()} | {
        "tmp": str(tmp_path), "data": str(toy_glue)}
    run_dir = tmp_path / "run"
    argv = [a.format(**files) for a in args]
    if argv[0] == "run":
        argv += ["--run-dir", str(run_dir)]
    result = nasprune(*argv, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not run_dir.exists()  # refused before anything was written


def test_the_docs_table_lists_every_mistake():
    table = (REPO / "docs" / "cli.md").read_text()
    missing = [name for name, _, message in MISTAKES
               if f"| {name} |" not in table or message not in table]
    assert not missing


def test_options_are_checked_without_loading_torch():
    """A command is refused in well under a second: checking loads no torch."""
    code = ("import sys\nfrom nasprune.cli import app\n"
            "try:\n    app(['run', '--task', 'sst2', '--space', 'foo'], standalone_mode=False)\n"
            "except Exception as exc:\n    print(type(exc).__name__)\n"
            "from nasprune.config import RunConfig\nRunConfig()\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split()[-1] == "False", out.stdout + out.stderr


def test_version_and_help():
    from nasprune import __version__

    result = nasprune("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"nasprune {__version__}"
    help_text = nasprune("run", "--help").stdout
    for panel in ("Data", "Model", "Training", "Search", "Pick, recovery, export", "Resources"):
        assert panel in help_text
    assert "layerwise" in help_text and "Example:" in help_text
    assert "needs nasprune[ray]" in help_text  # brackets are shown, not eaten as markup
    assert nasprune("--help").returncode == 0


def test_error_text_with_brackets_is_printed_as_is():
    code = ("from nasprune.cli.common import fail\n"
            "fail(\"onnx is not installed: pip install 'nasprune[onnx]' :smile:\")")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "pip install 'nasprune[onnx]' :smile:" in out.stderr
