"""The command line: user mistakes are one line on stderr and exit code 2, never a traceback."""

import subprocess
import sys

import pytest

from conftest import SHARED_DATA


def nasprune(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "nasprune", *args], capture_output=True,
                          text=True, timeout=timeout, env={"HF_HUB_OFFLINE": "1",
                                                           "HF_DATASETS_OFFLINE": "1",
                                                           "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("args, message", [
    (["finetune", "--task", "sst3"], "unknown task"),
    (["finetune", "--task", "sst2", "--data-dir", str(SHARED_DATA), "--model", "./missing"],
     "model path does not exist"),
    (["finetune", "--task", "sst2", "--data-dir", str(SHARED_DATA), "--text-columns", "sentense"],
     "did you mean 'sentence'"),
    (["finetune", "--task", "rte"], "no network"),
    (["finetune", "--task", "sst2", "--data-dir", str(SHARED_DATA), "--max-train-examples", "8",
      "--model", "no-such-org/no-such-model"], "cannot load 'no-such-org/no-such-model'"),
])
def test_user_errors_are_one_line(args, message):
    result = nasprune(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_help_lists_the_stages():
    result = nasprune("--help")
    assert result.returncode == 0 and "finetune" in result.stdout
