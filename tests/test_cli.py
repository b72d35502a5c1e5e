"""The command line: every user mistake it knows is one line on stderr and exit code 2,
refused before any work starts (nothing written, torch never loaded), never a traceback.

``MISTAKES`` (tests/cases/cli.py) is also the table in docs/cli.md (a test checks that
they agree); ``generated_mistakes`` adds the nan, inf, negative, zero and huge values of
every numeric option and the wrong kinds of path of every path option of every command."""

import functools
import os
import subprocess
import sys

import pytest
from cases import REPO
from cases.cli import ALWAYS_REFUSED, MISTAKES, files, generated_mistakes, options

#: The child runs the same nasprune as the tests (a source tree given by PYTHONPATH).
_PYTHONPATH = {k: v for k, v in os.environ.items() if k == "PYTHONPATH"}


def nasprune(*args, timeout=120, cwd=None):
    return subprocess.run([sys.executable, "-m", "nasprune", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                               "PATH": "/usr/bin:/bin", "COLUMNS": "200",
                               **_PYTHONPATH})


@pytest.mark.parametrize("args, message", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_user_mistakes_are_one_line_and_write_nothing(tmp_path, toy_glue, args, message):
    paths = {k: str(v) for k, v in files(tmp_path / "files").items()} | {
        "tmp": str(tmp_path), "data": str(toy_glue)}  # mistakes need no real data
    run_dir = tmp_path / "run"
    argv = [a.format(**paths) for a in args]
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


@pytest.mark.parametrize("argv, refusal", [
    (["run", "--task", "sst2", "--space", "foo"], "BadParameter"),
    (["run", "--task", "sst2", "--data-dir", "/nonexistent"], "NaspruneError no folder"),
    (["run", "--train-file", "nope.tsv", "--validation-file", "nope.tsv", "--text-columns",
      "sentence"], "NaspruneError data file not found"),
    (["run", "--model", "./missing", "--task", "sst2"], "NaspruneError model path does not"),
    (["adopt", "."], "NaspruneError .: no config.json"),
], ids=["option", "data folder", "data file", "model path", "adopt"])
def test_mistakes_are_refused_without_loading_torch(argv, refusal, tmp_path):
    """A command is refused in about a second: checking the options, the data and a model
    path loads no torch (nor transformers, scipy or scikit-learn)."""
    code = ("import sys\nfrom nasprune.cli import app\n"
            f"try:\n    app({argv!r}, standalone_mode=False)\n"
            "except BaseException as exc:\n    print(type(exc).__name__, exc)\n"
            "from nasprune.config import RunConfig\nRunConfig()\n"
            "print(sorted({'torch', 'transformers', 'scipy', 'sklearn'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = out.stdout.splitlines()
    assert lines and lines[0].startswith(refusal), out.stdout + out.stderr
    assert lines[-1] == "[]", out.stdout + out.stderr


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


# ------------------------------------------------- every number and path option, generated


def test_every_number_and_path_option_declares_its_check():
    """A new option without a checked type fails here: its mistakes would reach the work."""
    found = options()
    assert len(found) > 60  # the generator really walks the app
    undeclared = [f"{command} {param.name}" for command, param, parser, _ in found
                  if parser is None]
    assert not undeclared
    for _, param, parser, numeric in found:
        if numeric:
            assert not any(parser.accepts(float(v)) for v in ALWAYS_REFUSED), param.name


@functools.cache
def _commands() -> dict:
    """The Click commands Typer builds from the app (built once: a build takes ~50 ms)."""
    import typer.main

    from nasprune.cli import app

    return typer.main.get_command(app).commands


def _parse(argv: list[str]):
    """Parse ``argv`` as the command line would, without running the command."""
    return _commands()[argv[0]].make_context(argv[0], list(argv[1:]))


def test_generated_mistakes_are_refused_while_parsing(tmp_path):
    """Hundreds of cases, in-process: each is refused by the parser (so before any work),
    with one line that names the option; the real processes are the benchmark's."""
    paths = files(tmp_path / "files")
    cases = generated_mistakes(tmp_path, paths)
    assert len(cases) > 250
    wrong = []
    for case, argv, words in cases:
        try:
            _parse(argv)
            wrong.append(f"{case}: accepted")
        except Exception as exc:  # noqa: BLE001 - the parser's error, checked below
            message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
            if words not in message or "\n" in message or "Value error" in message:
                wrong.append(f"{case}: {type(exc).__name__}: {message}")
    assert not wrong, "\n".join(wrong[:20])


@pytest.mark.parametrize("argv", [
    ["run", "--pick", "params<0.5"],  # strict: a sub-network under half the parameters
    ["run", "--pick", "params<=20M"], ["run", "--pick", "latency<=12ms"],
    ["run", "--pick", "error<=5%"], ["run", "--search-split", "0.2"],
    ["run", "--search-split", "500"], ["serve", ".", "--port", "0"],
    ["serve", ".", "--max-wait-ms", "0"], ["run", "--recover-epochs", "0"],
    ["finetune", "--max-length", "512", "--model", "minilm-l6"],
])
def test_edge_values_are_accepted(argv):
    """The last flag's value is parsed as given (a refusal would raise)."""
    value = _value_of(_parse(argv), argv[-2])
    assert str(value) == argv[-1] or float(value) == float(argv[-1])


def _value_of(ctx, flag: str):
    """The parsed value of ``flag`` in a parsed command line."""
    return ctx.params[next(p.name for p in ctx.command.params if flag in p.opts)]


def test_max_length_is_checked_against_a_local_model_in_either_order(tiny_model_dir):
    for argv in (["finetune", "--model", str(tiny_model_dir), "--max-length", "100"],
                 ["finetune", "--max-length", "100", "--model", str(tiny_model_dir)]):
        with pytest.raises(Exception, match="100 tokens, but the model has 64 positions"):
            _parse(argv)
    parsed = _parse(["finetune", "--model", str(tiny_model_dir), "--max-length", "64"])
    assert _value_of(parsed, "--max-length") == 64
