"""Stock-config ("vanilla") exports: a uniform or layer-dropped sub-network loads in plain
transformers without remote code and computes what ``Supernet.use`` computes; any other
sub-network is refused by plain transformers with a pointer to ``trust_remote_code=True``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from test_export import SUBNET, batch, make_supernet, reference_logits, tiny_validation

import nasprune
from nasprune.core.families import FAMILIES
from nasprune.core.subnet import ModelShape, Subnet
from nasprune.deploy.export.vanilla import VanillaPlan, plan
from nasprune.deploy.export.writer import export_model

from conftest import tiny_tokenizer

UNIFORM = Subnet(((4, 32),) * 4)  # all 4 heads, 32 of 64 units, every layer
DROPPED = Subnet(((4, 48), (0, 0), (4, 48), (0, 0)))  # layers 1 and 3 removed whole
SHAPE = ModelShape(num_layers=4, num_heads=4, head_dim=8, hidden=32, ffn=64)


# --------------------------------------------------------------------------- the rule


def test_the_rule():
    assert plan(UNIFORM, SHAPE) == VanillaPlan((0, 1, 2, 3), 32)
    assert plan(DROPPED, SHAPE) == VanillaPlan((0, 2), 48)
    assert plan(SHAPE.full, SHAPE) == VanillaPlan((0, 1, 2, 3), 64)
    reasons = {
        "head size": Subnet(((3, 32),) * 4),  # uniform, but fewer heads
        "different FFN widths": Subnet(((4, 32), (4, 48), (4, 32), (4, 32))),
        "no attention block": Subnet(((4, 32), (0, 32), (4, 32), (4, 32))),
        "no FFN block": Subnet(((4, 32), (4, 0), (4, 32), (4, 32))),
        "keeps no layer": Subnet(((0, 0),) * 4),
    }
    for words, subnet in reasons.items():
        reason = plan(subnet, SHAPE)
        assert isinstance(reason, str) and words in reason, (subnet, reason)


def test_transformers_derives_the_head_size_from_the_hidden_size():
    """The premise of the rule: no stock config of these families takes a head size."""
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
                                 intermediate_size=8, head_dim=8, attention_head_size=8))
    attention = model.encoder.layer[0].attention.self
    assert attention.attention_head_size == 16  # hidden / heads, whatever is passed


# ------------------------------------------------------------------ vanilla exports


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Per family: the super-network and a uniform, a layer-dropped and a non-uniform
    export (the bert ones with a tokenizer)."""
    root = tmp_path_factory.mktemp("vanilla")
    made = {}
    for family in FAMILIES:
        sn = make_supernet(family)
        tok = tiny_tokenizer() if family == "bert" else None
        made[family] = (sn, {name: export_model(sn, subnet, root / f"{family}-{name}",
                                                   tokenizer=tok, source_model="org/tiny")
                             for name, subnet in (("uniform", UNIFORM), ("dropped", DROPPED),
                                                  ("other", SUBNET))})
    return made


def test_vanilla_directory_is_a_stock_one(exports):
    _, dirs = exports["bert"]
    for name, subnet in (("uniform", UNIFORM), ("dropped", DROPPED)):
        out = dirs[name]
        config = json.loads((out / "config.json").read_text())
        assert config["model_type"] == "bert"
        assert config["architectures"] == ["BertForSequenceClassification"]
        assert "auto_map" not in config and "nasprune_subnet" not in config
        assert config["num_hidden_layers"] == subnet.kept_layers
        assert config["num_attention_heads"] == 4 and config["hidden_size"] == 32
        assert config["intermediate_size"] == subnet.layers[0][1]
        assert not (out / "modeling_nasprune.py").exists()
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["layout"] == "vanilla" and manifest["format_version"] == 2
        files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
        assert set(manifest["files"]) == files - {"manifest.json"}  # tokenizer included
    assert config["nasprune_kept_layers"] == [0, 2]
    other = json.loads((dirs["other"] / "config.json").read_text())
    assert other["model_type"] == "nasprune_bert"
    assert other["auto_map"]["AutoConfig"] == "modeling_nasprune.NaspruneBertConfig"
    assert json.loads((dirs["other"] / "manifest.json").read_text())["layout"] == "remote"


@pytest.mark.parametrize("family", FAMILIES)
def test_nasprune_load_reads_both_layouts(exports, family):
    sn, dirs = exports[family]
    inputs = batch(sn.model.config)
    for name, subnet, layout in (("uniform", UNIFORM, "vanilla"),
                                 ("dropped", DROPPED, "vanilla"), ("other", SUBNET, "remote")):
        loaded = nasprune.load(dirs[name])
        assert loaded.layout == layout and loaded.subnet == subnet
        assert loaded.config.model_type == family  # the stock family, for nasprune's code
        with torch.no_grad():
            got = loaded.model(**inputs).logits
        torch.testing.assert_close(got, reference_logits(sn, subnet, inputs),
                                   rtol=1e-4, atol=1e-4)


def test_plain_transformers_loads_vanilla_and_refuses_the_rest(exports, tmp_path):
    """One process without nasprune: from_pretrained(dir), no trust_remote_code."""
    cases, expected = [], {}
    for family, (sn, dirs) in exports.items():
        inputs = batch(sn.model.config)
        for name, subnet in (("uniform", UNIFORM), ("dropped", DROPPED), ("other", SUBNET)):
            key = f"{family}-{name}"
            cases.append([key, str(dirs[name]), {k: v.tolist() for k, v in inputs.items()}])
            expected[key] = reference_logits(sn, subnet, inputs)
    script = (
        "import sys, json, torch\n"
        "sys.modules['nasprune'] = None  # not installed, as far as this process knows\n"
        "from transformers import AutoModelForSequenceClassification as A, AutoTokenizer\n"
        "out = {}\n"
        "for key, path, inputs in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        m = A.from_pretrained(path).eval()\n"
        "    except Exception as exc:\n"
        "        out[key] = ['refused', type(exc).__name__, str(exc)]\n"
        "        continue\n"
        "    with torch.no_grad():\n"
        "        logits = m(**{k: torch.tensor(v) for k, v in inputs.items()}).logits\n"
        "    tok = type(AutoTokenizer.from_pretrained(path)).__name__ if key.startswith('bert')"
        " else None\n"
        "    out[key] = [type(m).__module__, logits.tolist(), tok]\n"
        "print('RESULT', json.dumps(out))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], text=True,
                            capture_output=True, env=env, timeout=300, cwd=tmp_path,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.rsplit("RESULT ", 1)[-1])  # after the y/N prompts
    for key, value in got.items():
        if key.endswith("other"):  # per-layer counts: refused, never random layers
            assert value[0] == "refused" and value[1] == "ValueError", value
            assert "trust_remote_code=True" in value[2]
            continue
        module, logits, tok = value
        assert module.startswith("transformers.models."), value
        torch.testing.assert_close(torch.tensor(logits), expected[key], rtol=1e-4, atol=1e-4)
        if key.startswith("bert"):
            assert tok == "BertTokenizer"
    assert not (tmp_path / "modules").exists() or not any((tmp_path / "modules").rglob("*.py"))


def test_layout_option(tmp_path):
    sn = make_supernet()
    with pytest.raises(nasprune.NaspruneError, match="no stock-config form: layer 0 keeps 2"):
        export_model(sn, SUBNET, tmp_path / "a", layout="vanilla")
    out = export_model(sn, UNIFORM, tmp_path / "b", layout="remote")
    assert (out / "modeling_nasprune.py").is_file()
    assert nasprune.load(out).layout == "remote"
    with pytest.raises(nasprune.NaspruneError, match="unknown layout"):
        export_model(sn, UNIFORM, tmp_path / "c", layout="stock")


def test_vanilla_export_with_onnx_and_int8(tmp_path):
    sn = make_supernet("bert")
    out = export_model(sn, DROPPED, tmp_path / "o", formats=("onnx",), quantize="int8",
                       calibration=tiny_validation())
    inputs = batch(sn.model.config, 4, 17)
    expected = reference_logits(sn, DROPPED, inputs)
    loaded = nasprune.load(out, backend="onnx", quantized=False)
    torch.testing.assert_close(loaded.model(**inputs).logits, expected, rtol=0, atol=1e-3)
    int8 = nasprune.load(out)
    assert int8.quantized and (int8.model(**inputs).logits - expected).abs().max() < 0.1
