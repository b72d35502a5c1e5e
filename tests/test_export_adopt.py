"""A remote-code export re-saved by transformers (``save_pretrained``) is refused by the
loader of servers until ``nasprune adopt`` has checked that it loads and re-written its
manifest; ``AutoModel`` (no head) loads remote-code exports through ``auto_map``."""

from __future__ import annotations

import json

import pytest
import torch
from test_export import SUBNET, batch, cli, make_supernet

import nasprune
from nasprune.deploy.export.adopt import adopt
from nasprune.deploy.export.loader import load_model_dir
from nasprune.deploy.export.writer import export_model
from nasprune.errors import NaspruneError

from conftest import tiny_tokenizer


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("adopt")
    sn = make_supernet()
    return sn, export_model(sn, SUBNET, root / "export", tokenizer=tiny_tokenizer())


def resave(src, dst):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(src, trust_remote_code=True)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return model


def test_adopt_a_resaved_export(exported, tmp_path):
    sn, out = exported
    model = resave(out, tmp_path / "copy")
    assert not (tmp_path / "copy" / "manifest.json").exists()
    with pytest.raises(NaspruneError, match="manifest.json is missing"):
        load_model_dir(tmp_path / "copy")
    result = cli("adopt", str(tmp_path / "copy"))
    assert result.returncode == 0, result.stderr
    loaded = nasprune.load(tmp_path / "copy")
    assert loaded.subnet == SUBNET
    inputs = batch(sn.model.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**inputs).logits, model(**inputs).logits)
    manifest = json.loads((tmp_path / "copy" / "manifest.json").read_text())
    assert "adopted" in manifest and "modeling_nasprune.py" in manifest["files"]
    assert adopt(tmp_path / "copy") == tmp_path / "copy"  # intact: nothing to do


def test_adopt_refuses_what_it_cannot_check(exported, tmp_path):
    _, out = exported
    resave(out, tmp_path / "bad")
    weights = tmp_path / "bad" / "model.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(str(weights))
    state.pop(next(iter(state)))
    save_file(state, str(weights))
    with pytest.raises(NaspruneError, match="weights do not fit the config"):
        adopt(tmp_path / "bad")  # the CLI prints a NaspruneError as one line (test_cli.py)
    assert not (tmp_path / "bad" / "manifest.json").exists()
    stock = cli("adopt", str(tmp_path / "nothing"))  # the CLI path, refused before torch
    assert stock.returncode == 2 and "no config.json" in stock.stderr


def test_automodel_loads_a_remote_code_export(exported):
    from transformers import AutoModel

    sn, out = exported
    encoder = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    assert type(encoder).__name__ == "NaspruneBertModel"
    inputs = batch(sn.model.config)
    full = nasprune.load(out).model
    with torch.no_grad():
        expected = full.base_model(**inputs).last_hidden_state
        torch.testing.assert_close(encoder(**inputs).last_hidden_state, expected)
