"""Exports verify whole: every tampering is refused by ``nasprune.load`` and by the server's
loader (``load_model_dir``) with one line (``NaspruneError``, never another exception);
plain Hugging Face directories still load; file modes, temp directories and messages."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cases.exports import (
    DROPPED,
    SUBNET,
    TAMPER,
    edit_config,
    flip_byte,
    make_supernet,
    manifest_of,
    pristine_exports,
    rehash,
    set_manifest,
    write_manifest,
)

import nasprune
from nasprune.deploy.export import manifest as manifest_api
from nasprune.deploy.export.loader import Export, load_model_dir
from nasprune.deploy.export.staging import _HOST
from nasprune.deploy.export.writer import export_model
from nasprune.errors import NaspruneError


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A remote-layout and a vanilla-layout export, both with tokenizer files."""
    return pristine_exports(tmp_path_factory.mktemp("pristine"))


def _copy(pristine, layout: str, tmp_path: Path) -> Path:
    out = tmp_path / layout
    shutil.copytree(pristine[layout], out)
    return out


try:  # the server's own loading path (it calls load_model_dir)
    from nasprune.deploy.serve.predictor import load_for_inference

    SERVER_LOADER = (load_for_inference,)
except ImportError:  # the [serve] extra is not installed
    SERVER_LOADER = ()

@pytest.mark.parametrize("case,layout,tamper,words", TAMPER, ids=[t[0] for t in TAMPER])
def test_tampered_exports_are_refused_with_one_line(pristine, tmp_path, case, layout, tamper,
                                                    words):
    d = _copy(pristine, layout, tmp_path)
    nasprune.load(d)  # intact before
    tamper(d)
    for loader in (nasprune.load, load_model_dir, *SERVER_LOADER):
        with pytest.raises(NaspruneError) as err:  # anything else fails the test
            loader(d)
        message = str(err.value)
        assert "\n" not in message and words in message, (case, message)


def test_hidden_files_and_the_pipelines_recovery_report_are_accepted(pristine, tmp_path):
    d = _copy(pristine, "vanilla", tmp_path)
    (d / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (d / ".cache" / "huggingface").mkdir(parents=True)
    (d / ".cache" / "huggingface" / "model.safetensors.metadata").write_text("x")
    (d / "recovery.json").write_text("{}")  # written by the pipeline after export
    assert nasprune.load(d).layout == "vanilla"


def test_manifest_lists_every_file(pristine):
    for d in pristine.values():
        files = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
        assert set(manifest_of(d)["files"]) == files - {"manifest.json"}
        assert {"README.md", "tokenizer.json", "tokenizer_config.json", "subnet.json"} <= files


def test_a_manifest_written_again_through_the_api_loads(pristine, tmp_path):
    """What a verified re-import does: a harmless change (the card, a re-saved config with
    the same function), the manifest written again with its fields, loaded as before."""
    d = _copy(pristine, "remote", tmp_path)
    before = manifest_of(d)
    (d / "README.md").write_text("# re-saved\n")
    edit_config(d, transformers_version="9.9.9")
    written = manifest_api.write(d, before)
    assert written == manifest_of(d) and written["function"] == before["function"]
    assert manifest_api.verify(d)["quantize"] == before["quantize"]
    assert nasprune.load(d).subnet == SUBNET
    assert before["function"]["hidden_act"] == "gelu"


def test_an_edited_manifest_is_refused_also_without_checksums(pristine, tmp_path):
    d = _copy(pristine, "vanilla", tmp_path)
    set_manifest(d, quantize="int8")
    with pytest.raises(NaspruneError, match="fails its own checksum"):
        nasprune.load(d, verify_checksums=False)


def test_without_checksums_the_manifest_must_still_be_well_formed(pristine, tmp_path):
    d = _copy(pristine, "remote", tmp_path)
    flip_byte(d / "tokenizer.json")
    with pytest.raises(NaspruneError):
        nasprune.load(d)
    set_manifest(d, format_version="1")
    with pytest.raises(NaspruneError, match="format_version"):
        nasprune.load(d, verify_checksums=False)


# ----------------------------------------------------------------- the server's loader


def test_server_loader_plain_hf_directory(tiny_model_dir, pristine):
    model, tokenizer = load_model_dir(tiny_model_dir)  # none of nasprune's files
    assert type(model).__name__ == "BertForSequenceClassification" and tokenizer is not None
    loaded = load_model_dir(pristine["remote"])
    assert isinstance(loaded, Export) and loaded.subnet == SUBNET
    for load_for_inference in SERVER_LOADER:
        for d in (tiny_model_dir, *pristine.values()):
            model, tokenizer = load_for_inference(d)
            assert tokenizer is not None and not model.training


@pytest.mark.parametrize("marker", ["subnet.json", "metrics.json", "manifest.json",
                                    "modeling_nasprune.py"])
def test_server_loader_refuses_a_hf_directory_with_a_nasprune_file(tiny_model_dir, tmp_path,
                                                                   marker):
    d = tmp_path / "hf"
    shutil.copytree(tiny_model_dir, d)
    (d / marker).write_text("{}")
    with pytest.raises(NaspruneError) as err:
        load_model_dir(d)
    assert "\n" not in str(err.value)


def test_server_loader_one_line_for_a_broken_hf_directory(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert", "num_labels": "x"}')
    with pytest.raises(NaspruneError, match="cannot load") as err:
        load_model_dir(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(NaspruneError, match="not found"):
        load_model_dir(tmp_path / "nowhere")


# ----------------------------------------------------------- modes, temp dirs, messages


def test_every_file_has_the_same_ordinary_mode(pristine):
    umask = os.umask(0)
    os.umask(umask)
    for d in pristine.values():
        modes = {p.name: p.stat().st_mode & 0o777 for p in d.iterdir() if p.is_file()}
        assert set(modes.values()) == {0o666 & ~umask}, modes  # 0644 with umask 022


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temp_directories_of_dead_exports_are_removed(tmp_path):
    out, host = tmp_path / "out", _HOST
    stale = [tmp_path / "out.tmp-export",  # the fixed name of older versions
             tmp_path / f"out.tmp-export-{_dead_pid()}@{host}-0000ab12",
             tmp_path / f"out.old-export-{_dead_pid()}@{host}-0000cd34",
             tmp_path / "out.tmp-export-1@elsewhere-0000ef56"]  # another host, 2 days old
    kept = [tmp_path / f"out.tmp-export-{os.getpid()}@{host}-00000001",  # a live export
            tmp_path / "out.tmp-export-1@elsewhere-00000002",  # another host, fresh
            tmp_path / "outer.tmp-export", tmp_path / "out.tmp-export-notes"]  # not ours
    for d in (*stale, *kept):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x" * 10)
    old = time.time() - 2 * 24 * 3600
    os.utime(stale[-1], (old, old))
    export_model(make_supernet(), DROPPED, out)
    assert not any(d.exists() for d in stale)
    assert all(d.exists() for d in kept)
    assert nasprune.load(out).subnet == DROPPED


def test_kill_9_during_export_is_cleaned_by_the_next_export(tmp_path):
    out = tmp_path / "out"
    script = (
        "import os, signal, sys\n"
        f"sys.path[:0] = [{str(Path(__file__).parent)!r}]\n"
        "from cases.exports import DROPPED, make_supernet\n"
        "from nasprune.deploy.export.writer import export_model\n"
        "def progress(msg):\n"
        "    if msg.startswith('writing the model card'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        f"export_model(make_supernet(), DROPPED, {str(out)!r}, progress=progress)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=180, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    left = list(tmp_path.glob("out.tmp-export-*"))
    assert len(left) == 1 and (left[0] / "model.safetensors").is_file() and not out.exists()
    export_model(make_supernet(), DROPPED, out)
    assert not list(tmp_path.glob("out.tmp-export*")) and nasprune.load(out).layout == "vanilla"


def test_messages_read_well(pristine):
    with pytest.raises(NaspruneError, match=r"this export has no ONNX model; re-export") as err:
        nasprune.load(pristine["remote"], backend="onnx")
    assert "no an" not in str(err.value)
    with pytest.raises(NaspruneError, match=r"no int8 ONNX model; .* --quantize int8"):
        nasprune.load(pristine["remote"], backend="onnx", quantized=True)


def test_format_1_exports_still_load(pristine, tmp_path):
    """Written before the layouts: model type 'bert' + nasprune_subnet, no card."""
    d = _copy(pristine, "remote", tmp_path)
    config = json.loads((d / "config.json").read_text())
    config["model_type"] = "bert"
    config["auto_map"] = {"AutoModelForSequenceClassification":
                          config["auto_map"]["AutoModelForSequenceClassification"]}
    (d / "config.json").write_text(json.dumps(config))
    (d / "README.md").unlink()
    manifest = manifest_of(d)
    del manifest["files"]["README.md"], manifest["layout"]
    write_manifest(d, {**manifest, "format_version": 1})
    rehash(d)
    loaded = nasprune.load(d)
    assert loaded.layout == "remote" and loaded.subnet == SUBNET
    assert loaded.manifest["format_version"] == 1
