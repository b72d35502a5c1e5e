"""Every extension point is one registry, and every member of every registry is run here
(a new member is tested by being registered). The CLI's choices are the registries'."""

from __future__ import annotations

import pytest
import torch

from nasprune.cli import common as cli_app
from nasprune.core import IMPORTANCE, SPACES
from nasprune.core.families import FAMILIES
from nasprune.core.families.tiny import tiny_model
from nasprune.core.spaces import make_space
from nasprune.core.subnet import Subnet
from nasprune.core.supernet import Supernet
from nasprune.deploy.export.backends import BACKENDS, FORMATS
from nasprune.errors import NaspruneError
from nasprune.registry import Registry
from nasprune.search.executors import EXECUTORS, make_executor
from nasprune.search.executors.base import Job
from nasprune.search.searchers import SEARCHERS, make_searcher
from nasprune.train.recovery import RECOVERY_METHODS
from nasprune.train.strategies import STRATEGIES, make_strategy

from conftest import tiny_tokenizer

REGISTRIES = {"spaces": SPACES, "importance": IMPORTANCE,
              "strategies": STRATEGIES, "recovery": RECOVERY_METHODS, "searchers": SEARCHERS,
              "executors": EXECUTORS, "export backends": BACKENDS}
MEMBERS = [(kind, name) for kind, registry in REGISTRIES.items() for name in registry]


@pytest.mark.parametrize(("kind", "name"), MEMBERS)
def test_every_member_loads(kind, name):
    registry = REGISTRIES[kind]
    assert registry[name] is not None
    assert registry.check(name) == name


@pytest.mark.parametrize("registry", REGISTRIES.values(), ids=REGISTRIES)
def test_an_unknown_name_is_a_user_error_listing_the_members(registry):
    with pytest.raises(NaspruneError, match="choose one of " + ", ".join(registry)):
        registry["no-such-member"]
    assert registry.get("no-such-member") is None


def test_a_description_must_name_a_member():
    with pytest.raises(ValueError, match="described but not registered"):
        Registry("thing", {"a": "json:dumps"}, about={"b": "not a member"})


@pytest.mark.parametrize(("enum", "registry"), [
    (cli_app.Strategy, STRATEGIES), (cli_app.Space, SPACES), (cli_app.Searcher, SEARCHERS),
    (cli_app.Importance, IMPORTANCE), (cli_app.Recovery, RECOVERY_METHODS),
    (cli_app.Backend, EXECUTORS)])
def test_the_cli_offers_exactly_the_registered_names(enum, registry):
    assert [e.value for e in enum] == list(registry)


# ------------------------------------------------------------- every member, run

SHAPE = Supernet(tiny_model("bert", layers=3, heads=4, head_dim=8, ffn=32)).shape


@pytest.mark.parametrize("name", SPACES)
def test_every_space_samples_valid_subnetworks(name):
    import random

    space = make_space(name, SHAPE, unit_step=8)
    rng = random.Random(0)
    for _ in range(10):
        subnet = space.sample(rng)
        assert isinstance(subnet, Subnet) and len(subnet.layers) == SHAPE.num_layers
        assert all(0 <= h <= SHAPE.num_heads and 0 <= u <= SHAPE.ffn for h, u in subnet.layers)


def _batches(model, n: int = 2):
    torch.manual_seed(0)
    vocab = model.config.vocab_size
    return [{"input_ids": torch.randint(5, vocab, (4, 12)),
             "attention_mask": torch.ones(4, 12, dtype=torch.long),
             "labels": torch.randint(0, 2, (4,))} for _ in range(n)]


@pytest.mark.parametrize("name", IMPORTANCE)
def test_every_importance_method_reorders_without_changing_the_function(name):
    torch.manual_seed(0)
    supernet = Supernet(tiny_model("bert", layers=2, heads=4, head_dim=8, ffn=32).eval())
    batch = {k: v for k, v in _batches(supernet.model, 1)[0].items() if k != "labels"}
    with torch.no_grad():
        before = supernet.model(**batch).logits
    supernet.reorder_by_importance(_batches(supernet.model), method=name)
    with torch.no_grad():
        after = supernet.model.eval()(**batch).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_extracts_what_it_views(family):
    torch.manual_seed(0)
    supernet = Supernet(tiny_model(family, layers=2, heads=4, head_dim=8, ffn=32).eval())
    subnet = Subnet(((2, 16), (4, 8)))
    batch = {k: v for k, v in _batches(supernet.model, 1)[0].items()
             if k in ("input_ids", "attention_mask")}
    with torch.no_grad(), supernet.use(subnet) as net:
        viewed = net(**batch).logits
    small = supernet.extract(subnet).eval()
    with torch.no_grad():
        torch.testing.assert_close(small(**batch).logits, viewed, atol=1e-5, rtol=1e-4)


def _encoded(n: int = 16):
    import numpy as np

    from nasprune.data.encode import Encoded

    rng = np.random.default_rng(0)
    ids = [rng.integers(5, 100, size=int(rng.integers(6, 12))).astype(np.int32) for _ in range(n)]
    return Encoded(ids, [np.zeros_like(x, dtype=np.int8) for x in ids], rng.integers(0, 2, n))


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_makes_a_training_step(name):
    """Prepared as the loop prepares it, one ``backward`` gives a finite loss and gradients
    that move the encoder's weights (``distill``'s teacher is a frozen copy of the model)."""
    import math

    from nasprune.config import TrainConfig
    from nasprune.data.presets import PRESETS
    from nasprune.train.strategies.base import TrainContext

    torch.manual_seed(0)
    model = tiny_model("bert", layers=2, heads=4, head_dim=8, ffn=32)
    options = {"space": "small", "unit_step": 8, "calibration_examples": 8,
               "calibration_batch_size": 4} if STRATEGIES[name].samples_space else {}
    strategy = make_strategy(name, options)
    context = TrainContext(TrainConfig(progress=False), PRESETS["sst2"], torch.device("cpu"), 0)
    strategy.prepare(model, _encoded(), context)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = strategy.backward(model, _batches(model, 1)[0], 0.5)
    optimizer.step()
    assert math.isfinite(loss)
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert any(".encoder.layer." in n for n in moved), moved


def test_the_strategy_properties_the_configuration_reads_are_the_classes():
    """``config`` reads ``samples_space`` and ``needs_teacher`` by name, without torch."""
    from nasprune.train.strategies import needs_teacher, samples_space

    for name in STRATEGIES:
        assert samples_space(name) == STRATEGIES[name].samples_space, name
        assert needs_teacher(name) == STRATEGIES[name].needs_teacher, name


@pytest.mark.parametrize("name", [n for n in SEARCHERS if n != "optuna"])  # optuna: alias
def test_every_searcher_asks_members_of_its_space(name):
    space = make_space("layerwise", SHAPE, unit_step=8)
    searcher = make_searcher(name, space, seed=0)
    for _ in range(4):
        subnet = searcher.ask()
        assert len(subnet.layers) == SHAPE.num_layers
        assert all(0 <= h <= SHAPE.num_heads and 0 <= u <= SHAPE.ffn for h, u in subnet.layers)
        searcher.tell(subnet, (0.5, float(sum(u for _, u in subnet.layers))))


def _evaluate(subnet, fidelity):
    return {"error": 0.5, "params": float(sum(u for _, u in subnet.layers))}


@pytest.mark.parametrize("name", ["local"])
def test_the_local_executor_runs_a_job(name):
    """(``process`` and ``ray`` start workers: tests/test_executors.py runs them.)"""
    executor = make_executor(name, _evaluate)
    executor.submit(Job(SHAPE.full))
    done = executor.results()
    assert [d.error for d in done] == [None]
    assert [d.metrics["params"] for d in done] == [float(SHAPE.ffn * SHAPE.num_layers)]


@pytest.mark.parametrize("name", BACKENDS)
def test_every_export_backend_writes_and_loads_the_same_function(name, tmp_path):
    import nasprune
    from nasprune.deploy.export.writer import export_model

    backend = BACKENDS[name]
    if not backend.available():
        pytest.skip(f"{name}: its runtime is not installed")
    torch.manual_seed(0)
    supernet = Supernet(tiny_model("bert", layers=2, heads=4, head_dim=8, ffn=32).eval())
    subnet = Subnet(((2, 16), (4, 8)))
    fmt = "hf" if name == "torch" else name
    assert fmt in FORMATS
    out = export_model(supernet, subnet, tmp_path / name, tokenizer=tiny_tokenizer(),
                       formats=(fmt,))
    batch = {k: v for k, v in _batches(supernet.model, 1)[0].items()
             if k in ("input_ids", "attention_mask")}
    with torch.no_grad(), supernet.use(subnet) as net:
        expected = net(**batch).logits
    got = nasprune.load(out, backend=name).model(**batch).logits
    torch.testing.assert_close(torch.as_tensor(got), expected, atol=1e-4, rtol=1e-3)


def test_every_quantization_is_declared_by_one_backend():
    """``--quantize`` values are what the export backends declare, each by exactly one, and
    an export asked for one writes that backend's format."""
    from nasprune.deploy.export.backends import BACKENDS
    from nasprune.deploy.export.format import QUANTIZE
    from nasprune.deploy.export.options import ExportOptions

    declared = [q for name in BACKENDS for q in BACKENDS[name].quantizations]
    assert sorted(declared) == sorted(QUANTIZE)
    for q in QUANTIZE:
        options = ExportOptions(quantize=q)
        assert q in options.quantizer.quantizations
        assert options.quantizer in options.backends and options.formats[0] == "hf"
