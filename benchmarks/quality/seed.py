"""One task and seed: the shared teacher, every arm asked for, one speed figure per pick,
and the summary rows."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from benchmarks.common import DATA, RESULTS
from benchmarks.quality.arms import (
    arm_a,
    copy_teacher,
    hypervolume,
    load_teacher,
    run_config,
    searched_arm,
    speedups,
    trial_row,
)
from benchmarks.quality.settings import (
    ARMS,
    BUDGETS,
    DEFAULT_ARM,
    DEFAULT_MODEL,
    FAST_BATCH,
    OWN_STAGES,
    PLACE,
    SPEED_ROUNDS,
    run_name,
    settings_of,
)
from benchmarks.quality.stages import Stages

from nasprune.config import RunConfig
from nasprune.data.io import read_unlabeled
from nasprune.data.tasks import load_task_data
from nasprune.pipeline.stages import finetune_stage


def run_seed(task: str, seed: int, args) -> list[dict]:
    name = run_name(args.model, task, seed)
    base = PLACE.root / name
    base.mkdir(parents=True, exist_ok=True)
    defaults = settings_of(DEFAULT_MODEL, task, seed, argparse.Namespace(
        trials=100, train_examples=None, eval_examples=None, epochs=None, max_length=128))
    stages = Stages(RESULTS / f"{PLACE.name}-stages" / f"{name}.json", legacy=base / "stages.json",
                    settings=settings_of(args.model, task, seed, args), defaults=defaults)
    cfg = run_config(task, seed, args)
    data = load_task_data(cfg.data)
    std, kd = base / "std", base / "kd"
    print(f"{args.model} {task} seed {seed}: {len(data.train)} train / {len(data.search)} "
          f"search / {len(data.validation)} validation -> {base}", flush=True)

    def ensure_teacher() -> Path:
        stages("teacher", lambda: finetune_stage(cfg, data, std),
               output=std / "finetune" / "model")
        return std

    kd_cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, strategy="distill", strategy_options={"epochs": 1.0}))

    def ensure_kd() -> Path:
        copy_teacher(ensure_teacher(), kd)
        stages("d:supertrain", lambda: str(_supertrain(kd_cfg, data, kd)),
               output=kd / "supertrain" / "model")
        return kd

    fast, fast_cfg = base / "kd-fast", dataclasses.replace(
        kd_cfg, recover_batch_size=FAST_BATCH, train=dataclasses.replace(
            kd_cfg.train, strategy_options={"epochs": 1.0, "batch_size": FAST_BATCH}))

    def ensure_fast() -> Path:
        copy_teacher(ensure_teacher(), fast)
        stages("f:supertrain", lambda: str(_supertrain(fast_cfg, data, fast)),
               output=fast / "supertrain" / "model")
        return fast

    results = {}
    for arm in args.arms:
        if arm == "e" and task != "sst2":
            continue
        print(f" arm {ARMS[arm]}", flush=True)
        if arm == "a":
            results[arm] = arm_a(task, seed, args, data, ensure_teacher, stages)
        elif arm in "bc":
            results[arm] = searched_arm(arm, cfg, std, data, stages,
                                        "none" if arm == "b" else "distill", ensure_teacher)
        elif arm == "d":
            results[arm] = searched_arm("d", kd_cfg, kd, data, stages, "distill", ensure_kd)
        elif arm in "fg":  # (g): the same search, recovery epochs scaled to each pick
            arm_cfg = dataclasses.replace(fast_cfg, recover_scaled=arm == "g")
            results[arm] = searched_arm(arm, arm_cfg, fast, data, stages, "distill",
                                        ensure_fast)
        elif arm == "e":
            extra = unlabeled_texts(data, cfg, seed)
            results[arm] = searched_arm("e", kd_cfg, kd, data, stages, "distill", ensure_kd,
                                        extra)
    speed = speed_stages(results, data, ensure_teacher, stages)
    for r in results.values():  # one figure per architecture, however many arms pick it
        r["picks"] = {b: {**p, "speedup": speed[p["subnet"]], "speedup_rounds": SPEED_ROUNDS}
                      for b, p in r["picks"].items()}
    # read after the arms: an arm whose teacher checkpoint was gone fine-tuned it again
    teacher = stages("teacher", lambda: finetune_stage(cfg, data, std))
    device = teacher.get("device", "cpu")
    metric = data.preset.metric
    unpruned = {"validation": teacher["best"][metric], "search": teacher["best"]["search"][metric]}
    rows = []
    for arm, r in results.items():
        rows += [{"model": args.model, "device": device, **row}
                 for row in summary_rows(task, seed, arm, r, unpruned, stages)]
    detail = {arm: {"picks": r["picks"], "front": front_detail(r, stages, arm)}
              for arm, r in results.items()}
    out = RESULTS / f"{PLACE.name}-stages" / f"{name}-detail.json"
    kept = json.loads(out.read_text()) if out.is_file() else {}  # arms run in other calls
    out.write_text(json.dumps({**kept, **detail}, indent=1, default=str))
    return rows


def speed_stages(results: dict, data, ensure_teacher, stages: Stages) -> dict[str, dict]:
    """The speed-up of every distinct pick, measured once per sub-network (SPEED_ROUNDS)
    after the arms: the same architecture picked by several arms gets one figure, not
    several taken under different load. Only the shapes matter, so the teacher serves."""
    subnets = {str(t.subnet): t.subnet for r in results.values() for t in r["trials"]}
    loaded: dict = {}
    out = {}
    for text in sorted({p["subnet"] for r in results.values() for p in r["picks"].values()}):
        def measure(text=text):
            if not loaded:
                loaded.update(load_teacher(ensure_teacher, data))
            small = loaded["supernet"].extract(subnets[text]).eval()
            return speedups(small, loaded["supernet"].model, loaded["validation"],
                            loaded["pad"], rounds=SPEED_ROUNDS)
        out[text] = stages(f"speed:{text}", measure)
    return out


def _supertrain(cfg, data, run_dir):
    from nasprune.pipeline.stages import supertrain_stage

    return supertrain_stage(cfg, data, run_dir)


def unlabeled_texts(data, cfg: RunConfig, seed: int):
    """SST-2 training rows outside this run's training and search rows, labels dropped."""
    path = DATA / "sst2" / "train.tsv"
    frame = read_unlabeled(path, data.preset)
    used = set(data.train["row"]) | set(data.search["row"])
    rest = frame.drop(index=[i for i in used if i in frame.index])
    return rest.sample(n=min(PLACE.unlabeled, len(rest)), random_state=seed).reset_index(drop=True)


def front_detail(r: dict, stages: Stages, arm: str) -> list[dict]:
    """The search split's front, each member also measured on validation (a stage)."""
    from nasprune.search.pareto import front_of

    front = front_of(r["trials"], ("error", "encoder_params"), r["full"])
    key = f"{r.get('search_stage', arm)}:front-validation"

    def measure():
        return [{**trial_row(t, r["full"]), "validation": r["validate"](t.subnet)} for t in front]

    return stages(key, measure)


def summary_rows(task, seed, arm, r, unpruned, stages: Stages) -> list[dict]:
    front = front_detail(r, stages, arm)
    recovered = arm in "cdefg"
    rows = []
    for split in ("validation", "search"):
        if split == "search":  # every searched point, as the search saw it
            points = [(t.metrics["error"], t.metrics["encoder_params"]
                       / r["full"]["encoder_params"]) for t in r["trials"]]
        else:  # the search split's front, re-measured on validation
            points = [(1 - f["validation"], f["encoder_fraction"]) for f in front]
        if recovered:
            points += [(1 - p[split], p["encoder_fraction"]) for p in r["picks"].values()]
        own = OWN_STAGES[arm]
        picks = [f"{arm}:pick{int(b * 100)}" for b in BUDGETS]
        rows.append({
            "task": task, "arm": arm, "seed": seed, "default": arm == DEFAULT_ARM,
            "unpruned": unpruned[split],
            **{f"le{int(b * 100)}": r["picks"][b][split] for b in BUDGETS},
            "hypervolume": hypervolume(points), "split": split,
            "seconds": stages.seconds("teacher", *own, *picks),
        })
    return rows


