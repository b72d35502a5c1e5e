"""What each field of a run's configuration means to a run, declared once on the field
(``option``): its flag of ``nasprune run`` and the stage whose result it determines.
Everything else is derived from these declarations (``options``): the keys a ``--config``
file may use (``cli/config_file.py``), the ``RunConfig`` the command line builds
(``cli/run.py``) and what each stage's fingerprint covers (``rundir/fingerprints.py``).
"""

from __future__ import annotations

from dataclasses import MISSING, field, fields
from typing import Any, NamedTuple

#: The stages a field can determine (the run directory's stage names, ``rundir.ORDER``;
#: ``tests/test_config.py`` checks that they agree). ``None``: the field never changes a
#: result (where a run computes, how it reports).
STAGES = ("finetune", "supertrain", "supernet", "search", "export")


class Option(NamedTuple):
    """One field of a run's configuration, by its dotted key (``train.learning_rate``)."""

    key: str
    flag: str | None  # its flag of ``nasprune run``; None: it has none of its own
    stage: str | None  # the stage whose result it determines; None: none
    sub_flags: dict[str, str]  # a dict field: flags of some of its keys
    listed: bool  # a tuple: its flag takes a comma-separated list

    @property
    def param(self) -> str | None:
        """The flag without dashes: the key a ``--config`` file sets it with."""
        return None if self.flag is None else self.flag.lstrip("-").replace("-", "_")


def option(default: Any = MISSING, *, stage: str | None, flag: str | None = "",
           factory: Any = MISSING, sub_flags: dict[str, str] | None = None) -> Any:
    """A configuration field and what it means to a run. ``flag`` defaults to the field's
    name with dashes (``--max-length``); ``None`` declares that it has no flag."""
    if stage is not None and stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    return field(default=default, default_factory=factory,
                 metadata={"flag": flag, "stage": stage, "sub_flags": sub_flags or {}})


def section(cls: type) -> Any:
    """A nested configuration (``data``, ``train``, ``search``): its fields are options."""
    return field(default_factory=cls, metadata={"section": cls})


def options(cls: type, prefix: str = "") -> dict[str, Option]:
    """Every option of the configuration class ``cls`` by dotted key, in field order."""
    out: dict[str, Option] = {}
    for f in fields(cls):
        if "section" in f.metadata:
            out.update(options(f.metadata["section"], f"{prefix}{f.name}."))
            continue
        if "stage" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} does not declare what it means to a "
                            "run: declare it with config.options.option(...)")
        flag = f.metadata["flag"]
        if flag == "":
            flag = "--" + f.name.replace("_", "-")
        out[prefix + f.name] = Option(prefix + f.name, flag, f.metadata["stage"],
                                      f.metadata["sub_flags"], "tuple" in str(f.type))
    return out


def result_options(config: Any) -> dict:
    """The fields of ``config`` (a configuration instance) that change a result, those at
    their default left out: what a training's checkpoint is keyed by, so a checkpoint made
    before an upgrade that adds a field still resumes, and one made with another value of
    a field that changes nothing (progress, threads, device) does too."""
    default = type(config)()
    return {f.name: getattr(config, f.name) for f in fields(config)
            if f.metadata.get("stage") is not None
            and getattr(config, f.name) != getattr(default, f.name)}
