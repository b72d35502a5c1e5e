"""The export benchmark's report: the issues' targets met or not, and the Markdown table."""

from __future__ import annotations


def targets(rows: list[dict]) -> dict:
    """The issue's targets, on the faster float backend per sub-network and batch size."""
    out: dict = {}
    shrunk = sorted({r["subnet"] for r in rows if r["flops_fraction"] < 1})
    for bs, goal in ((32, 0.9), (1, 0.7)):
        best = {}
        for name in shrunk:
            cands = [r for r in rows if r["subnet"] == name and r["backend"] in
                     ("pytorch", "onnxruntime")]
            fastest = min(cands, key=lambda r: r[f"b{bs}_ms"])
            # of ideal against the full model on the same (faster) backend
            best[name] = {"backend": fastest["backend"], "of_ideal": fastest[f"of_ideal_b{bs}"]}
        out[f"of_ideal_b{bs}"] = best
        out[f"of_ideal_b{bs}_target_ge"] = goal
        out[f"of_ideal_b{bs}_met"] = all(v["of_ideal"] >= goal for v in best.values())
    gains = {}
    for name in sorted({r["subnet"] for r in rows}):
        by = {r["backend"]: r for r in rows if r["subnet"] == name}
        float_best = min(by["pytorch"]["b32_ms"], by["onnxruntime"]["b32_ms"])
        int8_best = by["onnxruntime-int8"]["b32_ms"]
        entry = {"int8_speedup_b32": round(float_best / int8_best, 3)}
        if "accuracy" in by["pytorch"]:
            entry["onnx_int8_accuracy_change_points"] = round(
                100 * (by["onnxruntime-int8"]["accuracy"] - by["pytorch"]["accuracy"]), 2)
        gains[name] = entry
    out["int8"] = gains
    out["int8_speedup_b32_target_ge"] = 1.5
    out["int8_speedup_b32_met"] = all(g["int8_speedup_b32"] >= 1.5 for g in gains.values())
    out.update(issue16_targets(rows))
    return out


def issue16_targets(rows: list[dict]) -> dict:
    """ONNX Runtime float >= PyTorch float at batch 1 and 32 for every sub-network; int8
    (the faster int8 backend) >= 1.5x over the faster float backend at batch 32 with an
    accuracy change of at most 1 point against PyTorch float (when accuracy is measured)."""
    ort_vs_pt, int8 = {}, {}
    for name in dict.fromkeys(r["subnet"] for r in rows):
        by = {r["backend"]: r for r in rows if r["subnet"] == name}
        ort_vs_pt[name] = {f"b{bs}": round(by["pytorch"][f"b{bs}_ms"] /
                                           by["onnxruntime"][f"b{bs}_ms"], 3) for bs in (1, 32)}
        fast_int8 = "onnxruntime-int8"  # the only int8
        float_best = min(by["pytorch"]["b32_ms"], by["onnxruntime"]["b32_ms"])
        entry = {"backend": fast_int8,
                 "speedup_b32": round(float_best / by[fast_int8]["b32_ms"], 3)}
        if "accuracy" in by[fast_int8] and "accuracy" in by["pytorch"]:
            entry["accuracy_change_points"] = round(
                100 * (by[fast_int8]["accuracy"] - by["pytorch"]["accuracy"]), 2)
        entry["met"] = entry["speedup_b32"] >= 1.5 and entry.get(
            "accuracy_change_points", 0.0) >= -1.0
        int8[name] = entry
    return {
        "onnxruntime_vs_pytorch_float": ort_vs_pt,
        "onnxruntime_vs_pytorch_float_target_ge": 1.0,
        "onnxruntime_vs_pytorch_float_met": all(v["b1"] >= 1.0 and v["b32"] >= 1.0
                                                for v in ort_vs_pt.values()),
        "int8_fast_backend": int8,
        "int8_fast_backend_met": all(v["met"] for v in int8.values()),
        "int8_accuracy_measured": any("accuracy_change_points" in v for v in int8.values()),
    }


def markdown(p: dict) -> str:
    t = p["targets"]
    lines = [
        "# Export: latency and accuracy per backend (MiniLM-L6)",
        "",
        f"Model: {p['model']}. Sequence length {p['seq_len']}, random tokens, no padding; "
        f"{p['threads']} thread(s) for PyTorch and ONNX Runtime; medians of "
        f"{p['rounds']['1']} (batch 1) / {p['rounds']['32']} (batch 32) interleaved rounds. "
        "Speed-up = the full model's time on the same backend / this time; ideal = 1 / FLOPs "
        "fraction; \"of ideal\" = speed-up / ideal. \"vs PT\" = speed-up over the full "
        "PyTorch float model.",
        "",
    ]
    if not p["trained"]:
        lines += ["No fine-tuned checkpoint was found at $NASPRUNE_BENCH_HOME/finetune-sst2/model, "
                  "so "
                  "accuracy is not reported (speed only).", ""]
    else:
        lines += [f"Accuracy: SST-2 validation, {p['eval_examples']} examples, of the "
                  "fine-tuned checkpoint as is (standard fine-tuning, no recovery training "
                  "of the sub-networks, so pruned accuracy drops are large; what matters "
                  "here is backend vs backend).", ""]
    lines += [
        "| sub-network | FLOPs | backend | b1 ms | b1 speed-up | b1 of ideal | b1 vs PT | "
        "b32 ms | b32 speed-up | b32 of ideal | b32 vs PT | accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in p["rows"]:
        acc = f"{100 * r['accuracy']:.1f}" if "accuracy" in r else "-"
        lines.append(
            f"| {r['subnet']} | {r['flops_fraction']:.2f} | {r['backend']} | {r['b1_ms']:.1f} | "
            f"{r['speedup_b1']:.2f}x | {r['of_ideal_b1']:.2f} | {r['vs_pytorch_full_b1']:.2f}x | "
            f"{r['b32_ms']:.0f} | {r['speedup_b32']:.2f}x | {r['of_ideal_b32']:.2f} | "
            f"{r['vs_pytorch_full_b32']:.2f}x | {acc} |")
    lines += ["", "Sub-networks (heads/units per layer):", ""]
    lines += [f"- {n}: {s}" for n, s in p["subnets"].items()]
    lines += ["", "## Targets", ""]
    for bs in (32, 1):
        per = ", ".join(f"{n} {v['of_ideal']:.2f} ({v['backend']})"
                        for n, v in t[f"of_ideal_b{bs}"].items())
        lines.append(f"- Batch {bs}, faster float backend, >= {t[f'of_ideal_b{bs}_target_ge']} "
                     f"of ideal: {per} - {'met' if t[f'of_ideal_b{bs}_met'] else 'not met'}.")
    gains = ", ".join(f"{n} {g['int8_speedup_b32']:.2f}x" for n, g in t["int8"].items())
    lines.append(f"- int8 vs the faster float backend at batch 32, >= 1.5x: {gains} - "
                 f"{'met' if t['int8_speedup_b32_met'] else 'not met'}.")
    if any("onnx_int8_accuracy_change_points" in g for g in t["int8"].values()):
        drops = ", ".join(f"{n} {g['onnx_int8_accuracy_change_points']:+.1f}"
                          for n, g in t["int8"].items())
        lines.append(f"- int8 accuracy change in points (target >= -1): {drops}.")
    lines += ["", "## Targets of issue 16 (ONNX that is fast)", ""]
    per = ", ".join(f"{n} {v['b1']:.2f}x / {v['b32']:.2f}x"
                    for n, v in t["onnxruntime_vs_pytorch_float"].items())
    lines.append("- ONNX Runtime float >= PyTorch float at batch 1 and 32 (b1 / b32): "
                 f"{per} - {'met' if t['onnxruntime_vs_pytorch_float_met'] else 'not met'}.")
    per = ", ".join(
        f"{n} {v['speedup_b32']:.2f}x ({v['backend']}"
        + (f", {v['accuracy_change_points']:+.1f} points" if "accuracy_change_points" in v
           else "") + ")" for n, v in t["int8_fast_backend"].items())
    accuracy_note = "" if t["int8_accuracy_measured"] else " (accuracy not measured: speed only)"
    lines.append("- int8 >= 1.5x over the faster float backend at batch 32 with <= 1 point "
                 f"accuracy change: {per} - "
                 f"{'met' if t['int8_fast_backend_met'] else 'not met'}{accuracy_note}.")
    auto = p.get("auto_backend") or {}
    if any(auto.values()):
        lines += ["", "Float backend `backend=\"auto\"` serves (the export's own timing, "
                  "batch 1 / 8 / 32): " + "; ".join(
                      f"{n}: " + " / ".join(str(v.get(b)) for b in ("1", "8", "32"))
                      for n, v in auto.items() if v) + "."]
    changed = p.get("changed_alone_vs_batched") or {}
    if any(changed.values()):
        lines += ["", "Validation predictions that change between batch 1 and batched runs: "
                  + "; ".join(f"{n}: " + ", ".join(f"{k} {(v or {}).get('changed')}"
                                                   for k, v in per.items())
                              for n, per in changed.items() if per) + "."]
    graphs = p.get("onnx_graph") or {}
    if graphs:
        lines += ["", "ONNX graph per sub-network: " + "; ".join(
            f"{n}: " + ("fused " + ", ".join(f"{k} {v}" for k, v in g.get("fusions", {}).items())
                        if g.get("optimized") else f"plain ({g.get('why_not_optimized')})")
            for n, g in graphs.items()) + "."]
    m = p["machine_facts"]
    lines += [
        "",
        f"Machine: {m['cpu_count']} CPU cores shared with other jobs, torch {m['torch']}; "
        f"load average {p['load_average'][0]:.1f} at the end; wall time {p['wall_s']} s "
        f"(exports: {', '.join(f'{k} {v} s' for k, v in p['export_s'].items())}). Single "
        "figures carry 10-20 % noise from the shared cores.",
    ]
    return "\n".join(lines)

