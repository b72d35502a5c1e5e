"""Exports the tests and the reliability benchmark share: the tiny super-network and the
sub-networks of both layouts, and ``TAMPER``, every way an export can be damaged or edited
that ``nasprune.load`` and the server must refuse with one line."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from nasprune.core.families.tiny import tiny_model
from nasprune.core.subnet import Subnet
from nasprune.core.supernet import Supernet
from nasprune.deploy.export import manifest as manifest_api

from . import tiny_tokenizer

# every case at once: fewer heads and units, no attention, no FFN, a removed layer
SUBNET = Subnet(((2, 32), (0, 48), (3, 0), (0, 0)))
#: Whole layers dropped, the rest full: exported as a stock transformers model.
DROPPED = Subnet(((4, 48), (0, 0), (4, 48), (0, 0)))


def make_supernet(family: str = "bert") -> Supernet:
    sn = Supernet(tiny_model(family, layers=4, heads=4, head_dim=8, ffn=64, vocab=100))
    sn.reorder_by_importance([], method="magnitude")  # prefixes are not the original order
    sn.model.eval()
    return sn


def remote_code_logits(out: Path, inputs: dict, cache: Path) -> tuple[str, list]:
    """What a user with only transformers gets: ``from_pretrained(out,
    trust_remote_code=True)`` in a fresh process where nasprune cannot be imported; the
    model's class name and its logits on ``inputs``."""
    given = json.dumps({k: v.tolist() for k, v in inputs.items()})
    script = (
        "import sys, json, torch\n"
        "sys.modules['nasprune'] = None  # not installed, as far as this process knows\n"
        "from transformers import AutoModelForSequenceClassification as A\n"
        f"m = A.from_pretrained({str(out)!r}, trust_remote_code=True).eval()\n"
        f"inputs = {{k: torch.tensor(v) for k, v in json.loads({given!r}).items()}}\n"
        "with torch.no_grad():\n"
        "    print(json.dumps([type(m).__name__, m(**inputs).logits.tolist()]))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(cache / "modules")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=120, cwd=cache)
    assert result.returncode == 0, result.stderr[-2000:]
    name, logits = json.loads(result.stdout.strip().splitlines()[-1])
    return name, logits


def pristine_exports(root: Path) -> dict[str, Path]:
    """A remote-layout and a vanilla-layout export, both with tokenizer files."""
    from nasprune.deploy.export.writer import export_model

    sn = make_supernet()
    return {layout: export_model(sn, subnet, root / layout, tokenizer=tiny_tokenizer())
            for layout, subnet in (("remote", SUBNET), ("vanilla", DROPPED))}


def manifest_of(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def write_manifest(d: Path, data) -> None:
    (d / "manifest.json").write_text(json.dumps(data))


def rehash(d: Path) -> None:
    """Make the manifest agree with the files again through its public API (what a
    deliberate edit, or a verified re-import, does): the function pins are kept."""
    manifest_api.write(d, manifest_of(d))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_config(d: Path, **changes) -> None:
    config = json.loads((d / "config.json").read_text())
    config.update(changes)
    (d / "config.json").write_text(json.dumps(config, indent=2))


def set_manifest(d: Path, **changes) -> None:
    write_manifest(d, {**manifest_of(d), **changes})


def set_entry(d: Path, rel: str, value) -> None:
    manifest = manifest_of(d)
    manifest["files"][rel] = value
    write_manifest(d, manifest)


def drop_entry(d: Path, rel: str) -> None:
    manifest = manifest_of(d)
    del manifest["files"][rel]
    write_manifest(d, manifest)


def rehash_by_hand(d: Path) -> None:
    """New file checksums written into the manifest without its own (a hand edit)."""
    manifest = manifest_of(d)
    for rel in manifest["files"]:
        data = (d / rel).read_bytes()
        manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(),
                                  "bytes": len(data)}
    write_manifest(d, manifest)


def _unlink(*names):
    return lambda d: [(d / n).unlink() for n in names]


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
    ("subnet-unlisted", "vanilla", lambda d: drop_entry(d, "subnet.json"),
     "the manifest lists no subnet.json"),
    ("missing-config", "vanilla", _unlink("config.json"), "config.json is missing"),
    ("missing-card", "vanilla", _unlink("README.md"), "README.md is missing"),
    ("manifest-list", "remote", lambda d: write_manifest(d, []),
     "malformed manifest: a JSON list, not an object"),
    ("manifest-format-version-string", "remote", lambda d: set_manifest(d, format_version="1"),
     "format_version '1' is not a positive integer"),
    ("manifest-files-entry-string", "remote",
     lambda d: set_entry(d, "config.json", "0" * 64), "the entry of config.json is a str"),
    ("manifest-files-list", "vanilla", lambda d: set_manifest(d, files=["config.json"]),
     "'files' is a list"),
    ("manifest-bytes-string", "vanilla",
     lambda d: set_entry(d, "config.json", {**manifest_of(d)["files"]["config.json"],
                                             "bytes": "12"}),
     "the size of config.json is not a byte count"),
    ("manifest-sha-not-hex", "vanilla",
     lambda d: set_entry(d, "config.json", {"sha256": "zz", "bytes": 1}),
     "the sha256 of config.json is not 64 hex digits"),
    ("manifest-not-json", "remote", lambda d: (d / "manifest.json").write_text('{"format": '),
     "unreadable manifest"),
    ("manifest-newer-format", "remote", lambda d: set_manifest(d, format_version=99),
     "written by a newer nasprune"),
    ("manifest-foreign-format", "remote", lambda d: set_manifest(d, format="other"),
     "is not a nasprune export manifest"),
    ("manifest-unknown-layout", "vanilla", lambda d: set_manifest(d, layout="stock"),
     "layout 'stock' is not one of"),
    ("manifest-backend-unlisted", "remote",
     lambda d: set_manifest(d, backends={"torch": "model.safetensors", "onnx": "x.onnx"}),
     "backend onnx names 'x.onnx', which it does not list"),
    ("manifest-path-outside", "remote",
     lambda d: set_entry(d, "../outside.txt", {"sha256": "0" * 64, "bytes": 1}),
     "lists a path outside the export"),
    ("changed-weights-byte", "vanilla", lambda d: flip_byte(d / "model.safetensors"),
     "model.safetensors fails its sha256 checksum"),
    ("truncated-weights", "remote",
     lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-9]),
     "model.safetensors has"),
    ("changed-config", "remote", lambda d: edit_config(d, num_labels=3),
     "config.json has"),
    ("changed-config-same-size", "vanilla",
     lambda d: (d / "config.json").write_text(
         (d / "config.json").read_text().replace('"gelu"', '"relu"')),
     "config.json fails its sha256 checksum"),
    ("changed-tokenizer", "vanilla", lambda d: flip_byte(d / "tokenizer.json"),
     "tokenizer.json fails its sha256"),
    ("changed-card", "remote",
     lambda d: (d / "README.md").write_text((d / "README.md").read_text() + "\nhi\n"),
     "README.md has"),
    ("rehashed-foreign-model-type", "remote",
     lambda d: (edit_config(d, model_type="gpt2"), rehash(d)),
     "model type 'gpt2' is not one that nasprune exports"),
    ("rehashed-config-subnet-mismatch", "remote",
     lambda d: (edit_config(d, nasprune_subnet=[[4, 64]] * 4), rehash(d)),
     "config.json and subnet.json describe different sub-networks"),
    ("rehashed-vanilla-layers-mismatch", "vanilla",
     lambda d: (edit_config(d, num_hidden_layers=3), rehash(d)),
     "does not describe subnet.json"),
    ("rehashed-subnet-garbage", "vanilla",
     lambda d: ((d / "subnet.json").write_text('{"layers": 3}'), rehash(d)),
     "not a sub-network JSON object"),
    ("rehashed-config-list", "vanilla",
     lambda d: ((d / "config.json").write_text("[]"), rehash(d)),
     "the config is a JSON list"),
    # the manifest checks itself; function-changing config keys are pinned
    ("manifest-quantize-int8", "remote", lambda d: set_manifest(d, quantize="int8"),
     "manifest.json fails its own checksum"),
    ("manifest-quantize-int8-vanilla", "vanilla", lambda d: set_manifest(d, quantize="int8"),
     "manifest.json fails its own checksum"),
    ("manifest-extra-key", "vanilla", lambda d: set_manifest(d, note="hi"),
     "fails its own checksum"),
    ("manifest-rehashed-by-hand", "remote",
     lambda d: (edit_config(d, hidden_act="relu"), rehash_by_hand(d)),
     "fails its own checksum"),
    ("manifest-without-its-checksum", "vanilla",
     lambda d: write_manifest(d, {k: v for k, v in manifest_of(d).items()
                                   if k != manifest_api.SEAL}),
     "carries no checksum of itself"),
    ("manifest-function-not-object", "vanilla",
     lambda d: manifest_api.write(d, {**manifest_of(d), "function": ["hidden_act"]}),
     "'function' is not an object"),
    ("resealed-hidden-act", "vanilla", lambda d: (edit_config(d, hidden_act="relu"), rehash(d)),
     "hidden_act is 'relu', but the export was made with 'gelu'"),
    ("resealed-layer-norm-eps", "remote",
     lambda d: (edit_config(d, layer_norm_eps=0.1), rehash(d)), "layer_norm_eps is 0.1"),
    ("resealed-problem-type", "vanilla",
     lambda d: (edit_config(d, problem_type="regression"), rehash(d)),
     "problem_type is 'regression'"),
    ("resealed-id2label", "remote",
     lambda d: (edit_config(d, id2label={"0": "positive", "1": "negative"}), rehash(d)),
     "id2label is"),
]
