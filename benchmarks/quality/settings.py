"""What the quality benchmark's modules share: names, arms, budgets, where stages go."""

from __future__ import annotations

from types import SimpleNamespace

from benchmarks.common import CHECKPOINTS, SETTINGS

#: Where stage state goes, the results' file name and the unlabeled texts of arm (e);
#: ``--root``/``--name`` of a smoke run change them.
PLACE = SimpleNamespace(root=CHECKPOINTS / "quality", name="quality", unlabeled=16_000)
BUDGETS = (0.5, 0.3, 0.2)
ARMS = {
    "a": "(a) tutorial: small space, masking, random",
    "b": "(b) ordering + layerwise/local, no recovery",
    "c": "(c) (b) + pick distillation",
    "d": "(d) super-network distillation + (c) [default]",
    "e": "(e) (d) + 16k unlabeled texts",
    "f": "(f) (d) with batch-32 distillation stages",
    "g": "(g) (f) + recovery epochs scaled to the pick",
}
#: The search each arm's picks come from (its stages are named after it).
SEARCH_OF = {"b": "b", "c": "b", "d": "d", "e": "d", "f": "f", "g": "f"}
#: The stages an arm needs besides the teacher and its picks.
OWN_STAGES = {"a": ["a:search"], "b": ["b:supernet", "b:search"],
              "c": ["b:supernet", "b:search"],
              **{arm: [f"{s}:supertrain", f"{s}:supernet", f"{s}:search"]
                 for arm, s in (("d", "d"), ("e", "d"), ("f", "f"), ("g", "f"))}}
#: Arm (f)'s batch for super-network distillation and recovery (the learning rates scale).
FAST_BATCH = 32
DEFAULT_ARM = "d"
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
