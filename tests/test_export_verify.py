"""Exports verify whole: every tampering is refused by ``nasprune.load`` and by the server's
loader (``load_model_dir``) with one line (``NaspruneError``, never another exception);
plain Hugging Face directories still load; file modes, temp directories and messages."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_export import SUBNET, make_supernet

import nasprune
from nasprune.core.subnet import Subnet
from nasprune.deploy.export import manifest as manifest_api
from nasprune.deploy.export.loader import Export, load_model_dir
from nasprune.deploy.export.staging import _HOST
from nasprune.deploy.export.writer import export_model
from nasprune.errors import NaspruneError

from conftest import tiny_tokenizer

DROPPED = Subnet(((4, 48), (0, 0), (4, 48), (0, 0)))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A remote-layout and a vanilla-layout export, both with tokenizer files."""
    root = tmp_path_factory.mktemp("pristine")
    sn = make_supernet()
    return {layout: export_model(sn, subnet, root / layout, tokenizer=tiny_tokenizer())
            for layout, subnet in (("remote", SUBNET), ("vanilla", DROPPED))}


def _copy(pristine, layout: str, tmp_path: Path) -> Path:
    out = tmp_path / layout
    shutil.copytree(pristine[layout], out)
    return out


def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def _write_manifest(d: Path, data) -> None:
    (d / "manifest.json").write_text(json.dumps(data))


def _rehash(d: Path) -> None:
    """Make the manifest agree with the files again through its public API (what a
    deliberate edit, or a verified re-import, does): the function pins are kept."""
    manifest_api.write(d, _manifest(d))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_config(d: Path, **changes) -> None:
    config = json.loads((d / "config.json").read_text())
    config.update(changes)
    (d / "config.json").write_text(json.dumps(config, indent=2))


def _set_manifest(d: Path, **changes) -> None:
    _write_manifest(d, {**_manifest(d), **changes})


def _set_entry(d: Path, rel: str, value) -> None:
    manifest = _manifest(d)
    manifest["files"][rel] = value
    _write_manifest(d, manifest)


def _drop_entry(d: Path, rel: str) -> None:
    manifest = _manifest(d)
    del manifest["files"][rel]
    _write_manifest(d, manifest)


def _rehash_by_hand(d: Path) -> None:
    """New file checksums written into the manifest without its own (a hand edit)."""
    manifest = _manifest(d)
    for rel in manifest["files"]:
        data = (d / rel).read_bytes()
        manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(),
                                  "bytes": len(data)}
    _write_manifest(d, manifest)


def _unlink(*names):
    return lambda d: [(d / n).unlink() for n in names]


try:  # the server's own loading path (it calls load_model_dir)
    from nasprune.deploy.serve.predictor import load_for_inference

    SERVER_LOADER = (load_for_inference,)
except ImportError:  # the [serve] extra is not installed
    SERVER_LOADER = ()

SPECIAL_TOKENS = json.dumps({"cls_token": "[PAD]", "sep_token": "[PAD]"})
# (case id, layout, tampering, words the one-line message must contain)
TAMPER = [
    ("added-special-tokens-map", "remote",
     lambda d: (d / "special_tokens_map.json").write_text(SPECIAL_TOKENS),
     "special_tokens_map.json is not listed in the manifest"),
    ("added-tokens-json", "vanilla", lambda d: (d / "added_tokens.json").write_text("{}"),
     "added_tokens.json is not listed"),
    ("added-vocab-txt", "vanilla", lambda d: (d / "vocab.txt").write_text("[PAD]\n[CLS]\n"),
     "vocab.txt is not listed"),
    ("added-adapter-config", "vanilla", lambda d: (d / "adapter_config.json").write_text("{}"),
     "adapter_config.json is not listed"),
    ("added-safetensors", "remote",
     lambda d: shutil.copyfile(d / "model.safetensors", d / "model-00002.safetensors"),
     "model-00002.safetensors is not listed"),
    ("added-onnx", "vanilla", lambda d: (d / "model.onnx").write_bytes(b"\x08\x07"),
     "model.onnx is not listed"),
    ("added-python", "vanilla", lambda d: (d / "modeling_nasprune.py").write_text("x = 1\n"),
     "modeling_nasprune.py is not listed"),
    ("added-file-in-subdir", "remote",
     lambda d: ((d / "onnx").mkdir(), (d / "onnx" / "model.onnx").write_bytes(b"0")),
     "onnx/model.onnx is not listed"),
    ("replaced-tokenizer-config", "remote",
     lambda d: (d / "tokenizer_config.json").write_text("{}"),
     "tokenizer_config.json has"),
    ("missing-manifest", "remote", _unlink("manifest.json"),
     "manifest.json is missing, though the directory holds nasprune files"),
    ("missing-manifest-vanilla", "vanilla", _unlink("manifest.json"),
     "manifest.json is missing, though"),
    ("missing-manifest-and-reports", "vanilla",
     _unlink("manifest.json", "subnet.json", "metrics.json"),
     "manifest.json is missing, though the directory holds nasprune files (config.json)"),
    ("missing-subnet", "remote", _unlink("subnet.json"), "subnet.json is missing"),
    ("subnet-unlisted", "vanilla", lambda d: _drop_entry(d, "subnet.json"),
     "the manifest lists no subnet.json"),
    ("missing-config", "vanilla", _unlink("config.json"), "config.json is missing"),
    ("missing-card", "vanilla", _unlink("README.md"), "README.md is missing"),
    ("manifest-list", "remote", lambda d: _write_manifest(d, []),
     "malformed manifest: a JSON list, not an object"),
    ("manifest-format-version-string", "remote", lambda d: _set_manifest(d, format_version="1"),
     "format_version '1' is not a positive integer"),
    ("manifest-files-entry-string", "remote",
     lambda d: _set_entry(d, "config.json", "0" * 64), "the entry of config.json is a str"),
    ("manifest-files-list", "vanilla", lambda d: _set_manifest(d, files=["config.json"]),
     "'files' is a list"),
    ("manifest-bytes-string", "vanilla",
     lambda d: _set_entry(d, "config.json", {**_manifest(d)["files"]["config.json"],
                                             "bytes": "12"}),
     "the size of config.json is not a byte count"),
    ("manifest-sha-not-hex", "vanilla",
     lambda d: _set_entry(d, "config.json", {"sha256": "zz", "bytes": 1}),
     "the sha256 of config.json is not 64 hex digits"),
    ("manifest-not-json", "remote", lambda d: (d / "manifest.json").write_text('{"format": '),
     "unreadable manifest"),
    ("manifest-newer-format", "remote", lambda d: _set_manifest(d, format_version=99),
     "written by a newer nasprune"),
    ("manifest-foreign-format", "remote", lambda d: _set_manifest(d, format="other"),
     "is not a nasprune export manifest"),
    ("manifest-unknown-layout", "vanilla", lambda d: _set_manifest(d, layout="stock"),
     "layout 'stock' is not one of"),
    ("manifest-backend-unlisted", "remote",
     lambda d: _set_manifest(d, backends={"torch": "model.safetensors", "onnx": "x.onnx"}),
     "backend onnx names 'x.onnx', which it does not list"),
    ("manifest-path-outside", "remote",
     lambda d: _set_entry(d, "../outside.txt", {"sha256": "0" * 64, "bytes": 1}),
     "lists a path outside the export"),
    ("changed-weights-byte", "vanilla", lambda d: _flip_byte(d / "model.safetensors"),
     "model.safetensors fails its sha256 checksum"),
    ("truncated-weights", "remote",
     lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-9]),
     "model.safetensors has"),
    ("changed-config", "remote", lambda d: _edit_config(d, num_labels=3),
     "config.json has"),
    ("changed-config-same-size", "vanilla",
     lambda d: (d / "config.json").write_text(
         (d / "config.json").read_text().replace('"gelu"', '"relu"')),
     "config.json fails its sha256 checksum"),
    ("changed-tokenizer", "vanilla", lambda d: _flip_byte(d / "tokenizer.json"),
     "tokenizer.json fails its sha256"),
    ("changed-card", "remote",
     lambda d: (d / "README.md").write_text((d / "README.md").read_text() + "\nhi\n"),
     "README.md has"),
    ("rehashed-foreign-model-type", "remote",
     lambda d: (_edit_config(d, model_type="gpt2"), _rehash(d)),
     "model type 'gpt2' is not one that nasprune exports"),
    ("rehashed-config-subnet-mismatch", "remote",
     lambda d: (_edit_config(d, nasprune_subnet=[[4, 64]] * 4), _rehash(d)),
     "config.json and subnet.json describe different sub-networks"),
    ("rehashed-vanilla-layers-mismatch", "vanilla",
     lambda d: (_edit_config(d, num_hidden_layers=3), _rehash(d)),
     "does not describe subnet.json"),
    ("rehashed-subnet-garbage", "vanilla",
     lambda d: ((d / "subnet.json").write_text('{"layers": 3}'), _rehash(d)),
     "not a sub-network JSON object"),
    ("rehashed-config-list", "vanilla",
     lambda d: ((d / "config.json").write_text("[]"), _rehash(d)),
     "the config is a JSON list"),
    # the manifest checks itself; function-changing config keys are pinned
    ("manifest-quantize-int8", "remote", lambda d: _set_manifest(d, quantize="int8"),
     "manifest.json fails its own checksum"),
    ("manifest-quantize-int8-vanilla", "vanilla", lambda d: _set_manifest(d, quantize="int8"),
     "manifest.json fails its own checksum"),
    ("manifest-extra-key", "vanilla", lambda d: _set_manifest(d, note="hi"),
     "fails its own checksum"),
    ("manifest-rehashed-by-hand", "remote",
     lambda d: (_edit_config(d, hidden_act="relu"), _rehash_by_hand(d)),
     "fails its own checksum"),
    ("manifest-without-its-checksum", "vanilla",
     lambda d: _write_manifest(d, {k: v for k, v in _manifest(d).items()
                                   if k != manifest_api.SEAL}),
     "carries no checksum of itself"),
    ("manifest-function-not-object", "vanilla",
     lambda d: manifest_api.write(d, {**_manifest(d), "function": ["hidden_act"]}),
     "'function' is not an object"),
    ("resealed-hidden-act", "vanilla", lambda d: (_edit_config(d, hidden_act="relu"), _rehash(d)),
     "hidden_act is 'relu', but the export was made with 'gelu'"),
    ("resealed-layer-norm-eps", "remote",
     lambda d: (_edit_config(d, layer_norm_eps=0.1), _rehash(d)), "layer_norm_eps is 0.1"),
    ("resealed-problem-type", "vanilla",
     lambda d: (_edit_config(d, problem_type="regression"), _rehash(d)),
     "problem_type is 'regression'"),
    ("resealed-id2label", "remote",
     lambda d: (_edit_config(d, id2label={"0": "positive", "1": "negative"}), _rehash(d)),
     "id2label is"),
]


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
        assert set(_manifest(d)["files"]) == files - {"manifest.json"}
        assert {"README.md", "tokenizer.json", "tokenizer_config.json", "subnet.json"} <= files


def test_a_manifest_written_again_through_the_api_loads(pristine, tmp_path):
    """What a verified re-import does: a harmless change (the card, a re-saved config with
    the same function), the manifest written again with its fields, loaded as before."""
    d = _copy(pristine, "remote", tmp_path)
    before = _manifest(d)
    (d / "README.md").write_text("# re-saved\n")
    _edit_config(d, transformers_version="9.9.9")
    written = manifest_api.write(d, before)
    assert written == _manifest(d) and written["function"] == before["function"]
    assert manifest_api.verify(d)["quantize"] == before["quantize"]
    assert nasprune.load(d).subnet == SUBNET
    assert before["function"]["hidden_act"] == "gelu"


def test_an_edited_manifest_is_refused_also_without_checksums(pristine, tmp_path):
    d = _copy(pristine, "vanilla", tmp_path)
    _set_manifest(d, quantize="int8")
    with pytest.raises(NaspruneError, match="fails its own checksum"):
        nasprune.load(d, verify_checksums=False)


def test_without_checksums_the_manifest_must_still_be_well_formed(pristine, tmp_path):
    d = _copy(pristine, "remote", tmp_path)
    _flip_byte(d / "tokenizer.json")
    with pytest.raises(NaspruneError):
        nasprune.load(d)
    _set_manifest(d, format_version="1")
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
        "from test_export import make_supernet\n"
        "from test_export_verify import DROPPED\n"
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
    manifest = _manifest(d)
    del manifest["files"]["README.md"], manifest["layout"]
    _write_manifest(d, {**manifest, "format_version": 1})
    _rehash(d)
    loaded = nasprune.load(d)
    assert loaded.layout == "remote" and loaded.subnet == SUBNET
    assert loaded.manifest["format_version"] == 1
