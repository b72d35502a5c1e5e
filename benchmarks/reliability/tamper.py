"""8. tamper: every damaged or edited export is refused by ``nasprune.load`` and the
server's loader with one line."""

from __future__ import annotations

import shutil
from pathlib import Path


def run_tamper(work: Path) -> tuple[dict, dict]:
    from tests.cases.exports import TAMPER, pristine_exports

    import nasprune
    from nasprune.errors import NaspruneError

    try:
        from nasprune.deploy.serve.predictor import load_for_inference
    except ImportError:
        load_for_inference = None
    pristine = pristine_exports(work / "pristine")
    rows = []
    for i, (case, layout, tamper, words) in enumerate(TAMPER):
        d = work / f"tamper-{i}"
        shutil.copytree(pristine[layout], d)
        nasprune.load(d)  # intact before
        tamper(d)
        row = {"case": case}
        for name, loader in (("load", nasprune.load), ("server", load_for_inference)):
            if loader is None:
                continue
            try:
                loader(d)
                row[name] = "accepted"
            except NaspruneError as exc:
                row[name] = "refused" if "\n" not in str(exc) else "refused (multi-line)"
                if name == "load":
                    row["message_as_expected"] = words in str(exc)
            except Exception as exc:  # noqa: BLE001 - counted: a refusal, but not one line
                row[name] = f"crashed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        rows.append(row)
        shutil.rmtree(d, ignore_errors=True)
    detected = sum(r["load"] == "refused" for r in rows)
    figures = {"cases": len(rows), "detected": detected}
    detail = {"server_loader_refused": sum(r.get("server") == "refused" for r in rows),
              "message_as_expected": sum(bool(r.get("message_as_expected")) for r in rows),
              "not_refused_cleanly": [r for r in rows if r["load"] != "refused"
                                      or r.get("server", "refused") != "refused"]}
    return figures, detail
