"""One convention everywhere: layers are numbered from 0 (the model's ``encoder.layer.N``)
in the model card, the HTML report and the Optuna study; the command line describes the
``uniform`` space as what it is."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from nasprune.core.subnet import ModelShape, Subnet
from nasprune.deploy.export.card import CardInfo, _shape_table
from nasprune.search.optuna_export import param_name

SHAPE = ModelShape(num_layers=3, num_heads=4, head_dim=8, hidden=32, ffn=64)
SUBNET = Subnet(((4, 64), (2, 32), (0, 0)))


def test_layers_are_numbered_from_zero_everywhere():
    info = CardInfo(name="x", layout="remote", subnet=SUBNET, shape=SHAPE, model_type="bert",
                    remote_type="nasprune_bert", source_model=None, report={}, params=1,
                    full_params=2, file_bytes={}, version="0", created="now")
    rows = [line.split("|")[1].strip() for line in _shape_table(info)[2:]]
    assert rows == ["0", "1", "2"]
    assert [param_name(i, "heads") for i in range(3)] == [
        "layer_00_heads", "layer_01_heads", "layer_02_heads"]
    pytest.importorskip("plotly")
    from nasprune.report.figures import shape_figure

    figure = shape_figure(SUBNET, SHAPE.to_dict())
    assert list(figure.data[0].x) == ["layer 0", "layer 1", "layer 2"]


def test_uniform_space_help_says_what_it_searches():
    from nasprune.cli.common import app

    text = CliRunner().invoke(app, ["run", "--help"], terminal_width=200).output
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())  # rich's panel borders
    assert "the first L layers, all heads, one FFN width" in text
    assert "same fraction of its heads" not in text


def test_a_fast_test_cannot_open_the_shared_data_by_its_path():
    """The ``slow`` guard catches direct paths too, not only the ``shared_data`` fixture."""
    from cases import SHARED_DATA

    from conftest import SharedDataInFastTest

    with pytest.raises(SharedDataInFastTest, match="marked slow"):
        open(SHARED_DATA / "sst2" / "validation.tsv")  # noqa: SIM115 - refused before opening


def test_torch_threads_are_set_in_one_place():
    """Only conftest sets torch's threads (one per xdist worker): a test module that set
    two at import undid that for every test, and two workers shared two cores four ways."""
    import os

    import torch
    from cases import REPO

    from conftest import TORCH_THREADS

    here = os.path.basename(__file__)
    setters = [p.name for p in (REPO / "tests").rglob("*.py")
               if p.name not in ("conftest.py", here) and "set_num_threads(" in p.read_text()]
    assert not setters
    assert torch.get_num_threads() == TORCH_THREADS
    if os.environ.get("PYTEST_XDIST_WORKER"):
        assert TORCH_THREADS == 1
