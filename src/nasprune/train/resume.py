"""Checkpoints of a training run: a stopped fine-tuning, super-network distillation or
recovery distillation (Ctrl-C, a crash, the end of a session) continues from its last
checkpoint instead of starting again.

After every epoch, and inside an epoch whenever ``CHECKPOINT_SECONDS`` of compute have
passed since the last one (at an optimiser step: a base-sized model's epoch can take an
hour on a CPU), the loop writes its state file (``resume.pt`` in a training's output
folder, ``.<export>.recovery.pt`` beside an export) atomically: the weights, the
optimiser and schedule (and fp16's gradient scale), the random states of every device
and the loop's own counters, under a key of
everything that determines the run (its options, the data, the model's shape). A run with
another key ignores the file. The file goes once the run has written its metrics.
Strategies' own random generators restart, so a resumed run is equivalent, not
bit-identical, to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "resume.pt"
#: Most seconds of training between two checkpoints inside an epoch
#: (``NASPRUNE_CHECKPOINT_SECONDS`` overrides; 0 checkpoints after every optimiser step).
CHECKPOINT_SECONDS = float(os.environ.get("NASPRUNE_CHECKPOINT_SECONDS", 600))


class Timer:
    """Says when a checkpoint inside an epoch is due: ``CHECKPOINT_SECONDS`` after the last."""

    def __init__(self):
        self.last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= CHECKPOINT_SECONDS

    def reset(self) -> None:
        self.last = time.monotonic()


def run_key(*parts) -> str:
    """A short hash of JSON-able parts (options, data description, model config)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rng_states() -> dict:
    """Every random generator a run draws from: Python, NumPy, torch's CPU one and, where
    present, each CUDA device's and Apple MPS's (dropout on a GPU draws from its own)."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        states["mps"] = torch.mps.get_rng_state()
    return states


def set_rng_states(states: dict) -> None:
    """Restore ``rng_states()``; devices this machine lacks are left out."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        for index, state in enumerate(states["cuda"][:count]):
            torch.cuda.set_rng_state(state, index)
    if states.get("mps") is not None and getattr(torch.backends, "mps", None) \
            and torch.backends.mps.is_available():
        torch.mps.set_rng_state(states["mps"])


def save_state(path: Path, key: str, model, optimizer, scheduler, precision, loop: dict
               ) -> None:
    """Write the state atomically (a temporary file renamed into place)."""
    state = {"key": key, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "loop": loop, "rng": rng_states(),
             "precision": precision.state_dict() if precision is not None else {}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path, key: str, model, optimizer, scheduler, precision=None
               ) -> dict | None:
    """The loop's counters after restoring everything else, or None (no file, other key)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a damaged file: start the run again rather than fail
        return None
    if state.get("key") != key:
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if precision is not None:  # fp16's gradient scale
        precision.load_state_dict(state.get("precision"))
    set_rng_states(state["rng"])
    return state["loop"]


def clear_state(path: Path) -> None:
    Path(path).unlink(missing_ok=True)
