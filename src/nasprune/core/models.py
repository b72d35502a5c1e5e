"""Model names (hub ids, local directories, packaged aliases), the compute device, and what a
model takes as input. torch loads when a device or a tensor is asked for, so that a name is
checked without it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasprune.core.packaged import PACKAGED, packaged_path
from nasprune.errors import NaspruneError

if TYPE_CHECKING:
    import torch

#: The keyword inputs of a sequence classifier that ``model_inputs`` keeps.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds")
#: Short names for models that Python packages carry, so they work offline.
ALIASES = PACKAGED
#: The Hugging Face Hub model each alias is a copy of, and its license (for model cards).
ALIAS_HUB = {name: (p.hub_id, p.license) for name, p in PACKAGED.items()}


def resolve_model(name: str) -> str:
    """A local directory or a hub id for ``from_pretrained``; aliases become package paths."""
    if name in ALIASES:
        return str(packaged_path(name))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise NaspruneError(f"{path} is not a model directory (no config.json)")
        return str(path)
    if path.exists():
        raise NaspruneError(f"model path {name} is a file; give the model's folder "
                            "(its config.json and weights) or a hub id")
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name and name.count("/") != 1
    if looks_like_path:
        raise NaspruneError(f"model path does not exist: {name}")
    return name  # a hub id such as "bert-base-uncased" or "org/model"


def load_pretrained(factory, name: str, **kwargs):
    """``factory.from_pretrained`` with a one-line error when a hub id cannot be fetched."""
    resolved = resolve_model(name)
    try:
        return factory.from_pretrained(resolved, **kwargs)
    except OSError as exc:
        if Path(resolved).is_dir():
            raise NaspruneError(f"cannot load {resolved}: {str(exc).splitlines()[0]}") from exc
        raise NaspruneError(
            f"cannot load {name!r} from the Hugging Face hub (no network, or no such model?); "
            "pass a local directory or a packaged alias (" + ", ".join(ALIASES) + ")"
        ) from exc


def check_model(name: str) -> None:
    """Fail now, with one line, if ``name`` cannot be loaded (a missing path, a hub id
    without network): reads only its configuration."""
    from transformers import AutoConfig

    load_pretrained(AutoConfig, name)


def positions(config, tokenizer=None) -> int:
    """The most tokens an input may have: the model's position embeddings (less the
    offset RoBERTa-style families keep for padding), and the tokenizer's own limit."""
    limit = int(getattr(config, "max_position_embeddings", 512) or 512)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "mpnet"):
        limit -= (getattr(config, "pad_token_id", 1) or 1) + 1
    own = getattr(tokenizer, "model_max_length", None)
    return min(limit, int(own)) if own and own < 1_000_000 else limit


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU, unless the user names one; a named device that this
    machine lacks (``cuda:3`` on a one-GPU machine, ``mps`` off a Mac) is refused now, in
    one line, instead of failing later with "invalid device ordinal"."""
    import torch

    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise NaspruneError(f"unknown device {name!r}") from exc
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise NaspruneError(f"device {name!r} requested but CUDA is not available")
            count = torch.cuda.device_count()
            if device.index is not None and device.index >= count:
                raise NaspruneError(f"device {name!r} requested but this machine has {count} "
                                    f"CUDA device(s): cuda:0..cuda:{count - 1}")
        elif device.type == "mps" and not _mps_available():
            raise NaspruneError(f"device {name!r} requested but Apple MPS is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def model_device(model) -> torch.device:
    """Where a model's weights are (CPU for a model without any)."""
    import torch

    return next(model.parameters(), torch.empty(0)).device


def model_inputs(batch: Mapping[str, Any], device: torch.device | None = None) -> dict:
    """The model's keyword inputs from a DataLoader batch (labels and extras dropped)."""
    import torch

    out = {k: v for k, v in batch.items() if k in MODEL_INPUTS and v is not None}
    if device is not None:
        out = {k: v.to(device) if torch.is_tensor(v) else v for k, v in out.items()}
    return out


def uses_token_types(config) -> bool:
    """BERT and ELECTRA take segment ids; RoBERTa (one type) and DistilBERT do not."""
    return getattr(config, "type_vocab_size", 0) > 1


def quiet_libraries() -> None:
    """Keep the terminal for our own progress bars and tables."""
    import huggingface_hub
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


@contextlib.contextmanager
def quiet_transformers(enabled: bool = True) -> Iterator[None]:
    """transformers' load reports and "Loading weights"/"Writing model shards" bars, and
    huggingface_hub's bars, off inside the block and as they were after it (library mode:
    ``nasprune.run(..., progress=False)`` prints nothing of theirs)."""
    if not enabled:
        yield
        return
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as tf_logging

    verbosity, bars = tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled()
    hub_bars = not hub_utils.are_progress_bars_disabled()
    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()
    hub_utils.disable_progress_bars()
    try:
        yield
    finally:
        tf_logging.set_verbosity(verbosity)
        if bars:
            tf_logging.enable_progress_bar()
        if hub_bars:
            hub_utils.enable_progress_bars()
