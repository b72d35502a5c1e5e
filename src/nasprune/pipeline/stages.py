"""The stages of a run before the export: fine-tune, sanity check, super-network (reordered,
or trained from the fine-tuned teacher), search. Each reuses its output when it is there."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from nasprune.config import RunConfig
from nasprune.core.models import model_device, pick_device
from nasprune.data.encode import Encoded, encode, subset
from nasprune.data.tasks import TaskData
from nasprune.errors import NaspruneError
from nasprune.progress import tracked
from nasprune.rundir import FINETUNE_DIR, METRICS, MODEL, SUPERTRAIN_DIR, RunDir
from nasprune.train.batches import iter_batches
from nasprune.train.finetune import finetune, load_classifier
from nasprune.train.loop import train


def finetune_stage(cfg: RunConfig, data: TaskData, run_dir: Path) -> dict:
    """The fine-tuned checkpoint (the teacher); reused when ``finetune/metrics.json`` exists.

    A strategy that needs a teacher (``distill``) runs later, in the super-network stage:
    this stage then fine-tunes with the standard strategy."""
    from dataclasses import replace

    from nasprune.train.strategies import needs_teacher

    out = RunDir(run_dir).stage(FINETUNE_DIR)
    done = out / METRICS
    if done.is_file() and (out / MODEL).is_dir():
        return json.loads(done.read_text())
    train_cfg = cfg.training()
    if needs_teacher(train_cfg.strategy):
        train_cfg = replace(train_cfg, strategy="standard", strategy_options={})
    return finetune(cfg.model, data, train_cfg, out)


def sanity_check(cfg: RunConfig, data: TaskData, run_dir: Path, tokenizer) -> None:
    """Refuse to go on with a fine-tuned model that learned nothing (unless ``force``)."""
    from nasprune.train.evaluation import predict, trivial_reason

    if cfg.force:
        return
    from transformers import AutoModelForSequenceClassification

    split = data.selection_split
    encoded = encode(tokenizer, data, split, cfg.train.max_length)
    model = AutoModelForSequenceClassification.from_pretrained(RunDir(run_dir).finetuned)
    logits = predict(model.to(pick_device(cfg.train.device)), encoded,
                     cfg.search.eval_batch_size, pad_id=tokenizer.pad_token_id or 0,
                     precision=cfg.train.precision)
    reason = trivial_reason(data.preset, logits, encoded.labels)
    if reason:
        raise NaspruneError(
            f"the fine-tuned model learned nothing on the {split} split: {reason}; train "
            "longer or on more data (--epochs, --max-train-examples), or pass --force")


def reorder_on_calibration(supernet, train_encoded: Encoded, examples: int, pad_id: int = 0, *,
                           seed: int = 0, method: str = "fisher", progress: bool = False) -> dict:
    """Importance-reorder ``supernet`` on a fixed subset of the training split: the one
    place the search's calibration set is drawn, for the pipeline and the benchmarks."""
    calibration = subset(train_encoded, examples, seed)
    batches = tracked(iter_batches(calibration, 32, supernet.model, pad_id),
                      math.ceil(len(calibration) / 32), f"importance ({method})", progress)
    return supernet.reorder_by_importance(batches, method=method)


def supernet_stage(cfg: RunConfig, data: TaskData, run_dir: Path, train_encoded: Encoded):
    """The importance-reordered super-network; reused when ``supernet/`` exists."""
    from transformers import AutoTokenizer

    from nasprune.core.supernet import Supernet
    from nasprune.train.strategies import needs_teacher

    out = RunDir(run_dir).supernet
    device = pick_device(cfg.train.device)
    if (out / "config.json").is_file():
        supernet = Supernet.from_pretrained(out)
        tokenizer = AutoTokenizer.from_pretrained(out)
    else:
        source = RunDir(run_dir).finetuned
        if needs_teacher(cfg.train.strategy):
            source = supertrain_stage(cfg, data, run_dir)
        supernet = Supernet.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        if supernet.order is None:  # super-network training already reordered it
            supernet.model.to(device)
            reorder_on_calibration(supernet, train_encoded, cfg.search.calibration_examples,
                                   tokenizer.pad_token_id or 0, seed=cfg.data.seed,
                                   method=cfg.search.importance, progress=cfg.train.progress)
        tmp = out.with_name(out.name + ".tmp")  # written whole, then renamed
        shutil.rmtree(tmp, ignore_errors=True)
        supernet.save(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, out)
    supernet.model.to(device).eval()
    return supernet, tokenizer


def supertrain_stage(cfg: RunConfig, data: TaskData, run_dir: Path) -> Path:
    """Super-network distillation from the fine-tuned teacher (a strategy with
    ``needs_teacher``); returns the trained checkpoint, reused when it exists."""
    out = RunDir(run_dir).stage(SUPERTRAIN_DIR)
    if (out / METRICS).is_file() and (out / MODEL).is_dir():
        return out / MODEL
    train_cfg = cfg.supertraining()
    finetuned = str(RunDir(run_dir).finetuned)
    model, tokenizer = load_classifier(finetuned, data.preset, train_cfg.seed)
    train(model, tokenizer, data, train_cfg, out)
    return out / MODEL


def search_stage(cfg: RunConfig, data: TaskData, run_dir: Path, supernet, tokenizer,
                 progress: bool = True):
    """Run or resume the search; finished candidates are looked up, never re-evaluated."""
    from nasprune.core.cost import CostModel
    from nasprune.core.spaces import make_space
    from nasprune.search.objective import SubnetEvaluator
    from nasprune.search.searchers import make_searcher

    s = cfg.search
    space = make_space(s.space, supernet.shape, any_heads=s.any_heads, unit_step=s.unit_step)
    searcher = make_searcher(s.searcher, space, s.seed, n_objectives=len(s.objectives))
    choose_on = encode(tokenizer, data, data.selection_split, cfg.train.max_length)
    evaluator = SubnetEvaluator(
        supernet, choose_on, data.preset, cost=CostModel(supernet, cfg.train.max_length),
        batch_size=s.eval_batch_size, pad_id=tokenizer.pad_token_id or 0,
        latency="latency" in s.objectives, seed=s.seed, precision=cfg.train.precision)
    if s.backend == "local":
        return _search(cfg, data, run_dir, space, searcher, evaluator, None, progress)
    from nasprune.search.executors import EvaluatorSpec, make_executor

    spec = EvaluatorSpec.from_evaluator(evaluator)  # the device it names is the model's now
    with on_host(supernet.model):  # workers rebuild the evaluator from the spec, once each
        executor = make_executor(s.backend, spec, workers=s.workers, address=s.address,
                                 cpus_per_worker=s.cpus_per_worker,
                                 gpus_per_worker=s.gpus_per_worker)
        try:
            return _search(cfg, data, run_dir, space, searcher, None, executor, progress)
        finally:
            executor.close()


def _search(cfg: RunConfig, data: TaskData, run_dir: Path, space, searcher, evaluator,
            executor, progress: bool):
    from nasprune.search.runner import run_search
    from nasprune.search.store import TrialStore

    s = cfg.search
    with TrialStore.for_run(run_dir) as store:
        store.set_meta("split", data.selection_split)
        return run_search(space, searcher, evaluator, store, s.trials, s.objectives,
                          executor=executor, progress=progress, low_fidelity=s.low_fidelity)


@contextlib.contextmanager
def on_host(model) -> Iterator[None]:
    """``model`` in host memory inside the block, back on its device after: while search
    workers hold copies of the super-network on a GPU, the parent's copy and its cached
    blocks would take their memory."""
    device = model_device(model)
    if device.type == "cpu":
        yield
        return
    model.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        yield
    finally:
        model.to(device)


def check_search(trials, force: bool) -> None:
    """A search whose best error is the smallest sub-network's found nothing to keep."""
    if force or len(trials) < 2:
        return
    smallest = min(trials, key=lambda t: t.metrics["encoder_params"])
    best = min(t.metrics["error"] for t in trials)
    if best >= smallest.metrics["error"]:
        raise NaspruneError(
            f"no sub-network beats the smallest one ({smallest.subnet}, error "
            f"{smallest.metrics['error']:.4f}): the fine-tuned model learned nothing usable; "
            "train longer or on more data, or pass --force")
