"""The tables ``nasprune run`` and ``nasprune search`` print when they finish."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def print_summary(record: dict, run_dir: Path) -> None:
    """Two tables: the run's facts, then the metric of the unpruned model and of the pick on
    the search split (where choices were made) and the validation set (reported only)."""
    from rich.table import Table

    out = Console()
    metric, split = record["metric"], record.get("split", "validation")
    table = Table(title=f"nasprune run: {record['task']} ({run_dir})", show_header=False)
    if "pick" in record:
        p = record["pick"]
        table.add_row("sub-networks evaluated", f"{record['trials']} "
                      f"({record['evaluated_now']} in this call), on the {split} split")
        table.add_row("Pareto front / hypervolume",
                      f"{record['front_size']} / {record['hypervolume']:.4f}")
        table.add_row(f"pick ({record['pick_rule']})", f"trial {p['id']}: {p.get('text', '')}")
        table.add_row("pick size", f"{p['params_fraction']:.1%} of parameters, "
                      f"{p['encoder_params_fraction']:.1%} of encoder, "
                      f"{p['flops_fraction']:.1%} of FLOPs")
        table.add_row("Pareto plot", record["pareto_png"])
    if "best_epoch" in record.get("recovery", {}):
        table.add_row("recovery kept", _kept_epoch(record["recovery"], split))
    if "export_dir" in record:
        table.add_row("exported model", record["export_dir"])
    if "report" in record:
        table.add_row("report", record["report"])
    if "max_length" in record:
        length = record["max_length"]
        table.add_row("maximum length", f"{length['tokens']} tokens ({length['chosen']})")
    table.add_row("time", ", ".join(f"{k} {v:.0f}s" for k, v in record["seconds"].items()))
    out.print(table)

    def cell(value) -> str:
        return "-" if value is None else f"{value:.4f}"

    scores = Table(title=f"{metric}: chosen on the {split} split, reported on validation")
    scores.add_column("model")
    columns = [split, "validation"] if split != "validation" else ["validation"]
    for name in columns:
        scores.add_column(f"{name} split" if name != "validation" else "validation set",
                          justify="right")
    unpruned = record.get("unpruned", {"validation": record["finetuned"][metric]})
    scores.add_row("unpruned (fine-tuned)", *[cell(unpruned.get(c)) for c in columns])
    if "pick" in record:
        scores.add_row("pick, as searched", *[cell(record["pick"]["metric"] if c == split
                                                   else None) for c in columns])
    if "recovery" in record:
        r = record["recovery"]
        scores.add_row("pick before recovery", *[cell(r.get(f"before_{c}")) for c in columns])
    if "exported" in record:
        label = f"pick exported ({record['recovery']['method']})" if "recovery" in record \
            else "pick exported"
        scores.add_row(label, *[cell(record["exported"].get(c)) for c in columns])
    out.print(scores)




def _kept_epoch(recovery: dict, split: str) -> str:
    """``epoch 2``, and when the choice was a close call on the split, against what."""
    text = f"epoch {recovery['best_epoch']} (0 = before distillation)"
    close = (recovery.get("selection") or {}).get("within_one_example_of")
    if close:
        text += (f"; within one example of epoch {', '.join(map(str, close))} on the {split} "
                 f"split ({recovery['selection']['examples']} examples): chosen by "
                 "distillation loss against the teacher there")
    return text
