"""The manifest of an export, and verifying a directory against it *whole*.

``manifest.json`` lists every file of the export with its size and sha256. ``verify``
refuses, with one line naming the problem (:class:`NaspruneError`):

- a missing, unreadable or malformed manifest (not an object, a ``format_version`` that is
  not an integer, a ``files`` entry that is not ``{"sha256": ..., "bytes": ...}``, a path
  leaving the directory, a backend file that is not listed);
- a listed file that is missing, of another size, or fails its checksum;
- a required file that is not listed (``config.json``, ``model.safetensors``,
  ``subnet.json``);
- any file in the directory that the manifest does not list. transformers and nasprune
  read more than the weights (``special_tokens_map.json``, ``tokenizer_config.json``,
  ``added_tokens.json``, ``adapter_config.json``, ``generation_config.json``, ...), and no
  list of those stays complete, so every unlisted file is refused except hidden ones
  (``.gitattributes``, the hub's ``.cache/``; no loader reads them), ``__pycache__`` and
  :data:`TOLERATED` (``recovery.json``, which the pipeline may write after the export and
  which only reports).

The manifest checks itself, too: ``manifest_sha256`` is the sha256 of the rest of it (as
canonical JSON), so an edit of any entry (``"quantize": null`` -> ``"int8"``) is refused,
and so is a manifest without it. ``function`` pins the config keys that change what the
model computes (:data:`FUNCTION_KEYS`) to their values at export: a config edit of one of
them is refused even when the manifest is written again (``write``, e.g. after a re-save).
The checksum is not a signature (no secret): whoever rewrites the manifest with ``write``
or by hand can make any edit consistent. It catches damage, stale or mixed files, additions
and edits, not a deliberate forger.

The public API is ``write(directory, fields)`` (list the files, pin, seal) and
``verify(directory)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from nasprune.deploy.export.backends import BACKENDS, BASE
from nasprune.deploy.export.format import (
    CONFIG,
    FORMAT,
    FORMAT_VERSION,
    LAYOUTS,
    MANIFEST,
    MARKERS,
    QUANTIZE,
    REQUIRED,
    TOLERATED,
    WEIGHTS,
)
from nasprune.errors import NaspruneError
from nasprune.files import read_json, read_json_or_none, write_json

#: The manifest's checksum of itself (sha256 of the rest, as canonical JSON).
SEAL = "manifest_sha256"
#: Config keys that change what an export computes without changing its weights' shapes;
#: ``manifest.json`` ``function`` pins them (a key that is absent is pinned as null).
FUNCTION_KEYS = ("hidden_act", "activation", "layer_norm_eps", "problem_type", "id2label",
                 "label2id", "position_embedding_type")

_SHA256 = re.compile(r"[0-9a-f]{64}")
#: The manifest ``backends`` entries that name a file of their own (a backend's float and
#: int8 model); the base backend's int8 entry is a note, its file is ``WEIGHTS``.
_FILE_ENTRIES = tuple(key for name in BACKENDS if name != BASE for key in (name, f"{name}_int8"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_object(path: Path, what: str) -> dict:
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise NaspruneError(f"{path}: the {what} is a JSON {type(data).__name__}, "
                            "not an object (damaged or not written by nasprune)")
    return data


def file_entries(directory: Path) -> dict[str, dict]:
    """``{relative path: {"sha256", "bytes"}}`` of every file under ``directory``."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel != MANIFEST:
            files[rel] = {"sha256": sha256(path), "bytes": path.stat().st_size}
    return files


def _digest(manifest: dict) -> str:
    rest = {k: v for k, v in manifest.items() if k != SEAL}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def function_of(config: dict) -> dict:
    """The :data:`FUNCTION_KEYS` of a parsed ``config.json``."""
    return {key: config.get(key) for key in FUNCTION_KEYS}


def check_function(manifest: dict, config: dict, path: Path) -> None:
    """Refuse a config (parsed ``path``) whose pinned keys differ from the manifest's."""
    for key, pinned in manifest["function"].items():
        if config.get(key) != pinned:
            raise NaspruneError(f"{path}: {key} is {config.get(key)!r}, but the export was "
                                f"made with {pinned!r} (it changes what the model computes); "
                                "re-export instead of editing the config")


def write(directory: str | os.PathLike, fields: dict) -> dict:
    """Write ``directory/manifest.json``: ``fields`` (format, layout, backends, ...) plus
    every file's size and sha256, the ``function`` pins and the seal; return it.

    The pins come from ``fields["function"]`` when given (a manifest written again keeps
    what the export was made with), else from ``config.json``. ``verify`` it afterwards.
    """
    directory = Path(directory)
    manifest = {k: v for k, v in fields.items() if k not in ("files", SEAL)}
    if "function" not in manifest:
        manifest["function"] = function_of(read_object(directory / CONFIG, "config"))
    manifest["files"] = file_entries(directory)
    manifest = json.loads(json.dumps(manifest, default=str))  # as it will be read back
    manifest[SEAL] = _digest(manifest)
    write_json(directory / MANIFEST, manifest)
    return manifest


# ---------------------------------------------------------------------- which directory


def _config_is_nasprune(directory: Path) -> bool:
    config = read_json_or_none(directory / CONFIG)
    if not isinstance(config, dict):
        return False
    model_type = config.get("model_type")
    return (isinstance(model_type, str) and model_type.startswith("nasprune")) or any(
        isinstance(k, str) and k.startswith("nasprune_") for k in config)


def nasprune_markers(directory: str | os.PathLike) -> list[str]:
    """The nasprune-only files in ``directory`` (``config.json`` when it carries nasprune
    keys); empty for a plain Hugging Face directory."""
    directory = Path(directory)
    found = [name for name in MARKERS if (directory / name).exists()]
    if _config_is_nasprune(directory):
        found.append(CONFIG)
    return found


# ------------------------------------------------------------------------- the manifest


def _bad(path: Path, problem: str) -> NaspruneError:
    return NaspruneError(f"{path}: malformed manifest: {problem}")


def _check_rel(path: Path, rel: Any) -> str:
    if not isinstance(rel, str) or not rel:
        raise _bad(path, f"file name {rel!r} is not a non-empty string")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or "\\" in rel or Path(rel).is_absolute():
        raise NaspruneError(f"{path} lists a path outside the export: {rel}")
    if pure.as_posix() != rel or rel == MANIFEST:
        raise _bad(path, f"file name {rel!r} is not a plain relative path")
    return rel


def check_manifest(manifest: Any, path: Path) -> dict:
    """``manifest`` (parsed ``path``) if it is a well-formed nasprune manifest, else raise."""
    if not isinstance(manifest, dict):
        raise _bad(path, f"a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT:
        raise NaspruneError(f"{path} is not a nasprune export manifest "
                            f"(format {manifest.get('format')!r}, expected {FORMAT!r})")
    version = manifest.get("format_version")
    if type(version) is not int or version < 1:
        raise _bad(path, f"format_version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise NaspruneError(f"{path.parent} was written by a newer nasprune (format "
                            f"{version}, this one reads up to {FORMAT_VERSION}); upgrade nasprune")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise _bad(path, f"'files' is a {type(files).__name__}, not an object")
    for rel, entry in files.items():
        _check_rel(path, rel)
        if not isinstance(entry, dict):
            raise _bad(path, f"the entry of {rel} is a {type(entry).__name__}, not "
                       '{"sha256": ..., "bytes": ...}')
        digest, size = entry.get("sha256"), entry.get("bytes")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise _bad(path, f"the sha256 of {rel} is not 64 hex digits")
        if type(size) is not int or size < 0:
            raise _bad(path, f"the size of {rel} is not a byte count")
    for required in REQUIRED:
        if required not in files:
            raise NaspruneError(f"{path.parent}: the manifest lists no {required}")
    backends = manifest.get("backends", {"torch": WEIGHTS})
    if not isinstance(backends, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in backends.items()):
        raise _bad(path, "'backends' is not an object of names")
    for key in _FILE_ENTRIES:
        if key in backends and backends[key] not in files:
            raise _bad(path, f"backend {key} names {backends[key]!r}, which it does not list")
    if manifest.get("quantize") not in (None, *QUANTIZE):
        raise _bad(path, f"unknown quantization {manifest.get('quantize')!r}")
    layout = manifest.get("layout", "remote" if version == 1 else None)
    if layout not in LAYOUTS:
        raise _bad(path, f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    return {**manifest, "backends": backends, "layout": layout}


def read_manifest(directory: Path) -> dict:
    """The checked manifest of ``directory`` (no file is hashed)."""
    if not directory.is_dir():
        raise NaspruneError(f"export directory not found: {directory}")
    path = directory / MANIFEST
    if not path.exists():
        others = [m for m in nasprune_markers(directory) if m != MANIFEST]
        if others:
            raise NaspruneError(f"{directory}: {MANIFEST} is missing, though the directory "
                                f"holds nasprune files ({', '.join(others)}); refusing to "
                                "load an unverifiable export, re-export it")
        raise NaspruneError(f"{directory}: {MANIFEST} is missing; not a nasprune export")
    raw = read_json(path, "manifest")
    manifest = check_manifest(raw, path)
    if SEAL not in raw:
        raise NaspruneError(f"{path} carries no checksum of itself (written by an older "
                            "nasprune, or edited); re-export it")
    if raw[SEAL] != _digest(raw):
        raise NaspruneError(f"{path} fails its own checksum (edited after export); "
                            "re-export instead of editing it")
    function = raw.get("function")
    if not isinstance(function, dict) or not set(function) <= set(FUNCTION_KEYS):
        raise _bad(path, "'function' is not an object of config keys")
    return manifest


def _unlisted(directory: Path, files: dict) -> list[str]:
    found = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in sorted(names):
            if name.startswith("."):
                continue
            rel = (Path(root) / name).relative_to(directory).as_posix()
            if rel != MANIFEST and rel not in files and rel not in TOLERATED:
                found.append(rel)
    return found


def verify(directory: str | os.PathLike) -> dict:
    """Check the export whole: every listed file (presence, size, sha256) and no unlisted
    one a loader could read; return the manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    files = manifest["files"]
    for rel, entry in files.items():
        path = directory / rel
        if not path.is_file():
            raise NaspruneError(f"{directory}: {rel} is missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise NaspruneError(f"{directory}: {rel} has {size} bytes, the manifest says "
                                f"{entry['bytes']} (truncated or replaced)")
        if sha256(path) != entry["sha256"]:
            raise NaspruneError(f"{directory}: {rel} fails its sha256 checksum (corrupted "
                                "or modified after export)")
    extra = _unlisted(directory, files)
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise NaspruneError(f"{directory}: {extra[0]}{more} is not listed in the manifest "
                            "(added after export?); transformers or nasprune could read it, "
                            "so the export is refused: remove it or re-export")
    return manifest
