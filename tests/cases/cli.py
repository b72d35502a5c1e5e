"""The command line's user mistakes, shared by tests/test_cli.py and the reliability
benchmark: ``MISTAKES`` (a hand list, also the table in docs/cli.md) and
``generated_mistakes`` (nan, inf, negative, zero and huge values of every numeric option,
and a file where a folder goes, a folder where a file goes, an unwritable folder, for every
path option of every command, read from the Typer app). Every one must be one line on
stderr and exit code 2, before any work."""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path

DATA = "{data}"  # the caller's GLUE folder: the toy one in tests, the shared data in benchmarks
SST2 = ["--task", "sst2", "--data-dir", DATA]


def files(tmp: Path) -> dict[str, Path]:
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
    (tmp / "latin1.toml").write_bytes('task = "sst2"\nnotes = "café"\n'.encode("latin-1"))
    (tmp / "no-label.tsv").write_text("sentence\n" + "".join(f"text {i}\n" for i in range(20)))
    fifo = tmp / "fifo.tsv"
    if not fifo.exists():
        os.mkfifo(fifo)
    model = tmp / "model-64"  # a model folder with 64 positions and an FFN of 37 units
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 64,
                                                   "intermediate_size": 37}))
    return {"good": good, "labels": tmp / "labels.tsv", "empty": tmp / "empty.csv",
            "bad_key": tmp / "bad-key.toml", "broken": tmp / "broken.toml",
            "corrupt": run, "keys": keys, "latin1": tmp / "latin1.toml",
            "no_label": tmp / "no-label.tsv", "fifo": fifo, "model64": model}


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
    ("zero epochs", ["run", *SST2, "--epochs", "0"], "'--epochs': '0': must be a number > 0"),
    ("zero batch size", ["run", *SST2, "--batch-size", "0"],
     "'--batch-size': '0': must be an integer >= 1"),
    ("zero max length", ["run", *SST2, "--max-length", "0"],
     "'--max-length': '0': must be an integer >= 1"),
    ("warm-up out of range", ["run", *SST2, "--warmup-ratio", "1.5"],
     "'--warmup-ratio': '1.5': must be a number >= 0 and < 1"),
    ("zero trials", ["run", *SST2, "--trials", "0"], "'--trials': '0': must be an integer >= 1"),
    ("zero unit step", ["run", *SST2, "--unit-step", "0"],
     "'--unit-step': '0': must be an integer >= 1"),
    ("zero workers", ["run", *SST2, "--workers", "0"], "'--workers': '0': must be an integer >= 1"),
    ("low fidelity out of range", ["run", *SST2, "--low-fidelity", "1.5"],
     "'--low-fidelity': '1.5': must be a number > 0 and < 1"),
    ("zero search split", ["run", *SST2, "--search-split", "0"],
     "'--search-split': '0': must be a fraction"),
    ("fractional search count", ["run", *SST2, "--search-split", "2.5"],
     "'--search-split': '2.5': must be a fraction"),
    ("search split larger than the training set",
     ["run", *SST2, "--max-train-examples", "300", "--search-split", "5000"],
     "leaves no training examples"),
    ("negative recovery epochs", ["run", *SST2, "--recover-epochs", "-1"],
     "'--recover-epochs': '-1': must be a number >= 0"),
    ("unknown device", ["run", *SST2, "--device", "tpu"], "unknown device 'tpu'"),
    ("a GPU this machine lacks", ["run", *SST2, "--device", "cuda:7"],
     "device 'cuda:7' requested but"),
    ("unknown precision", ["run", *SST2, "--precision", "fp8"], "'fp8' is not one of"),
    ("serving on a GPU this machine lacks", ["serve", "{tmp}", "--port", "0", "--device",
                                             "cuda:7"], "device 'cuda:7' requested but"),
    ("exporting on a GPU this machine lacks", ["export", "{tmp}", "--device", "cuda:7"],
     "device 'cuda:7' requested but"),
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
    # found by a hostile user: each started work (or a traceback) before
    ("nan learning rate", ["finetune", *SST2, "--lr", "nan"], "'--lr': 'nan': must be"),
    ("nan epochs", ["finetune", *SST2, "--epochs", "nan"], "'--epochs': 'nan': must be"),
    ("infinite epochs", ["finetune", *SST2, "--epochs", "inf"], "'--epochs': 'inf': must be"),
    ("negative training subset", ["finetune", *SST2, "--max-train-examples", "-3"],
     "'--max-train-examples': '-3': must be an integer >= 1"),
    ("empty validation subset", ["finetune", *SST2, "--max-eval-examples", "0"],
     "'--max-eval-examples': '0': must be an integer >= 1"),
    ("output folder is a file", ["finetune", *SST2, "--out", "{good}"], "is a file, not a folder"),
    ("output folder cannot be written", ["finetune", *SST2, "--out", "/proc/nasprune-x"],
     "'/proc/nasprune-x' cannot be written"),
    ("search split of one example", ["run", *SST2, "--search-split", "1.0"],
     "'--search-split': '1.0': must be a fraction in (0, 1) or a whole count >= 10"),
    ("pick by a count no model has", ["run", *SST2, "--pick", "params<=2"],
     "'params<=2' means 2 params, which no model has"),
    ("pick of more than the full model", ["run", *SST2, "--pick", "flops<=150%"],
     "a fraction of the full model is within 0..1"),
    ("more tokens than positions", ["run", *SST2, "--max-length", "100000"],
     "'--max-length': '100000': must be an integer >= 1 and <= 8192"),
    ("more tokens than the model has", ["finetune", *SST2, "--max-length", "600"],
     "600 tokens, but the model has 512 positions"),
    ("data folder is a file", ["run", "--task", "sst2", "--data-dir", "{good}"],
     "is a file, not a folder"),
    ("training file is a folder", ["run", "--train-file", "{tmp}", "--validation-file",
                                   "{good}"], "is a folder, not a file"),
    ("server port out of range", ["serve", "{tmp}", "--port", "70000"],
     "'--port': '70000': must be an integer >= 0 and <= 65535"),
    # found by a new user: tracebacks, numbers accepted and started, misleading messages
    ("config file not UTF-8", ["run", "--config", "{latin1}"], "not UTF-8 text (byte 0xe9"),
    ("search file without the label column", ["run", *SST2, "--search-file", "{no_label}"],
     "search file lacks column 'label'"),
    ("batch size no machine holds", ["run", *SST2, "--batch-size", "99999999999999999999"],
     "'--batch-size': '99999999999999999999': must be an integer >= 1 and <= 65536"),
    ("unit step beyond any FFN", ["run", *SST2, "--unit-step", "99999999"],
     "'--unit-step': '99999999': must be an integer >= 1 and <= 4096"),
    ("unit step beyond the model's FFN", ["run", *SST2, "--model", "{model64}",
                                          "--unit-step", "64"],
     "64 units per step, but the model's FFN has 37 units"),
    ("served tokens beyond any model", ["serve", "{tmp}", "--max-length", "100000"],
     "'--max-length': '100000': must be an integer >= 2 and <= 8192"),
    ("served tokens beyond the model's positions", ["serve", "{model64}", "--max-length",
                                                    "100"],
     "100 tokens, but the model has 64 positions"),
    ("pareto over the error alone", ["pareto", "{tmp}", "--objectives", "error"],
     "objectives: 'error' followed by one or two of"),
    ("a FIFO as a data file", ["run", "--train-file", "{fifo}", "--validation-file", "{good}",
                               "--text-columns", "sentence"],
     "is not a regular file (a FIFO, device or socket)"),
    ("a FIFO as a config file", ["run", "--config", "{fifo}"], "is not a regular file"),
    ("model path naming a file", ["run", *SST2, "--model", "{good}"],
     "is a file; give the model's folder"),
    ("output under /proc", ["report", "{tmp}", "--out", "/proc/nasprune.html"],
     "'/proc/nasprune.html' cannot be written: /proc: it does not accept new files"),
    ("training data that is the validation data",
     ["run", "--train-file", "{good}", "--validation-file", "{good}", "--text-columns",
      "sentence"], "40 of the 40 training rows have a text of the validation set"),
]


# ------------------------------------------------------------- generated from the Typer app

#: Values every number option refuses (ints: also a fraction), then the ones its declared
#: range decides.
ALWAYS_REFUSED = ("nan", "inf", "-inf", "-3")
BY_RANGE = ("0", "1e12")


def options() -> list[tuple[str, object, object, bool]]:
    """``(command, click parameter, its parser, numeric?)`` for every number and path
    parameter of every command; the parser is None where the command declares none."""
    import typer.main

    from nasprune.cli import app

    group = typer.main.get_command(app)
    found = []
    for info in app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        hints = typing.get_type_hints(info.callback, include_extras=True)
        for param in group.commands[name].params:
            hint = hints.get(param.name)
            if hint is None or typing.get_origin(hint) is not typing.Annotated:
                continue
            base, *meta = typing.get_args(hint)
            kinds = set(typing.get_args(base) or (base,)) - {type(None)}
            numeric = bool(kinds & {int, float}) and not kinds & {bool}
            if numeric or kinds & {Path}:
                parser = next((getattr(m, "parser", None) for m in meta
                               if getattr(m, "parser", None) is not None), None)
                found.append((name, param, parser, numeric))
    return found


def _flag(param) -> list[str]:
    return [param.opts[0]] if param.param_type_name == "option" else []


def _path_cases(parser, tmp: Path, paths: dict) -> list[tuple[str, str, str]]:
    """``(case, value, expected words)`` of the path mistakes ``parser`` must refuse."""
    kind = type(parser).__name__
    if kind == "InFile":
        return [("a folder", str(tmp), "is a folder, not a file")]
    if kind == "InDir":
        return [("a file", str(paths["good"]), "is a file, not a folder")]
    if kind == "OutDir":
        return [("a file", str(paths["good"]), "is a file, not a folder"),
                ("unwritable", "/proc/nasprune-x/out", "cannot be written"),
                ("under a file", f"{paths['good']}/out", "cannot be created")]
    if kind == "OutFile":
        return [("a folder", str(tmp), "is a folder, not a file"),
                ("unwritable", "/proc/nasprune-x/out.html", "cannot be written")]
    return []


def generated_mistakes(tmp: Path, paths: dict) -> list[tuple[str, list[str], str]]:
    """``(id, argv, expected words)`` of every refused value of every number and path
    option (``paths``: ``files(tmp)``); the expected words name the option."""
    cases = []
    for command, param, parser, numeric in options():
        where = param.opts[0] if param.param_type_name == "option" else param.name
        lead = [str(tmp)] if param.param_type_name == "option" and command in (
            "search", "export", "serve", "pareto", "report") else []
        if numeric:
            values = [*ALWAYS_REFUSED, *(v for v in BY_RANGE
                                         if parser is None or not parser.accepts(float(v)))]
            if parser is not None and parser.integer:
                values.append("2.5")
            for value in values:
                cases.append((f"{command} {where} {value}",
                              [command, *lead, *_flag(param), value], f"'{where}'"))
        else:
            for case, value, words in _path_cases(parser, tmp, paths):
                cases.append((f"{command} {where} {case}",
                              [command, *lead, *_flag(param), value], words))
    return cases
