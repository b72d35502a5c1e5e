"""nasprune: smaller, faster transformer encoders by multi-objective structural pruning.

The Python API mirrors the command line (see examples/api.py):

    import nasprune
    cfg = nasprune.RunConfig(data=nasprune.DataConfig(task="sst2", data_dir="DATA"))
    summary = nasprune.run(cfg, "runs/sst2")              # = nasprune run ...
    model, tokenizer = nasprune.load(summary["export_dir"])
"""

from nasprune.config import DataConfig, RunConfig, SearchConfig, TrainConfig
from nasprune.core.spaces import SearchSpace, make_space
from nasprune.core.subnet import ModelShape, Subnet
from nasprune.errors import NaspruneError

__version__ = "0.1.0"
__all__ = ["NaspruneError", "ModelShape", "SearchSpace", "Subnet", "make_space", "RunConfig",
           "DataConfig", "TrainConfig", "SearchConfig", "run", "export", "load"]


def _run(cfg, run_dir, progress: bool = True, **kwargs) -> dict:
    """``nasprune.pipeline.run``; ``progress=False`` also keeps transformers' load reports
    and progress bars off (quiet means quiet)."""
    from nasprune.core.models import quiet_transformers
    from nasprune.pipeline import run

    with quiet_transformers(enabled=not progress):
        return run(cfg, run_dir, progress=progress, **kwargs)


def __getattr__(name: str):  # lazy: torch is imported only when a stage runs
    if name == "export":
        from nasprune.deploy.export.writer import export_model

        return export_model
    if name == "load":
        from nasprune.deploy.export.loader import load

        return load
    if name == "run":
        return _run
    raise AttributeError(f"module 'nasprune' has no attribute {name!r}")
