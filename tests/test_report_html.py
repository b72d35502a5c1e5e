"""``nasprune report``: the HTML page's parts, its command, and the page opened in headless
Chromium (console, Pareto points, the pick, hover text; a screenshot)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nasprune.errors import NaspruneError
from nasprune.search.pareto import front_of, full_reference
from nasprune.search.pick import pick
from nasprune.search.store import TrialStore

pytest.importorskip("plotly")

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "docs" / "report.png"


# ----------------------------------------------------------------------------- a run


def fake_run(run_dir: Path, *, n: int = 40, export: bool = True, loadtest: bool = True,
             latency: bool = True) -> dict:
    """A run directory as ``nasprune run`` leaves it, with a MiniLM-sized search whose
    metrics follow a smooth curve (no model is trained: the report only reads files)."""
    from nasprune.config import RunConfig
    from nasprune.core.spaces import make_space
    from nasprune.core.subnet import ModelShape, encoder_flops, encoder_params
    from nasprune.data.tasks import DataConfig
    from nasprune.search.runner import run_search
    from nasprune.search.searchers import make_searcher

    shape = ModelShape(num_layers=6, num_heads=12, head_dim=32, hidden=384, ffn=1536)
    space = make_space("layerwise", shape, unit_step=384)
    fixed = 11_800_000
    whole = encoder_params(shape.full, shape)

    def evaluate(subnet, fidelity):
        cap = sum(w * (h / 12 + u / 1536) / 2
                  for w, (h, u) in zip((.3, .25, .2, .12, .08, .05), subnet.layers))
        error = 0.08 + 0.4 * (1 - cap) ** 2
        enc = encoder_params(subnet, shape)
        out = {"error": error, "metric": 1 - error, "accuracy": 1 - error,
               "params": fixed + enc, "encoder_params": enc,
               "flops": encoder_flops(subnet, shape)}
        if latency:
            out["latency"] = 1.5 + 6.0 * enc / whole
        return out

    store = TrialStore.for_run(run_dir)
    objectives = ("error", "params")
    store.set_meta("split", "search")
    run_search(space, make_searcher("random", space, seed=0), evaluate, store, n,
               objectives, progress=False)
    trials = store.trials()
    store.close()

    cfg = RunConfig(model="synthetic-example", data=DataConfig(task="sst2", data_dir="data"),
                    pick="encoder_params<=0.5")
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), default=str))
    history = [{"epoch": e, "accuracy": a, "error": 1 - a,
                "search": {"accuracy": s, "error": 1 - s}}
               for e, a, s in ((1, 0.87, 0.88), (2, 0.9, 0.91), (3, 0.895, 0.915))]
    (run_dir / "finetune").mkdir()
    (run_dir / "finetune" / "metrics.json").write_text(json.dumps({
        "task": "sst2", "metric": "accuracy", "best": history[2], "history": history,
        "selected_on": "search", "train_examples": 4000, "search_examples": 400,
        "validation_examples": 872, "train_seconds": 321.5, "device": "cpu"}))
    full = full_reference(trials)
    chosen = pick(trials, cfg.pick, objectives, full)
    summary = {"task": "sst2", "metric": "accuracy", "split": "search",
               "unpruned": {"search": full["metric"], "validation": 0.895},
               "trials": len(trials), "pick_rule": cfg.pick,
               "pick": {"id": chosen.id, "subnet": json.loads(chosen.subnet.to_json()),
                        "text": str(chosen.subnet), "split": "search", **chosen.metrics},
               "full": full}
    if export:
        out = run_dir / "export"
        out.mkdir()
        (out / "subnet.json").write_text(json.dumps({
            **json.loads(chosen.subnet.to_json()), "text": str(chosen.subnet),
            "shape": shape.to_dict()}))
        (out / "metrics.json").write_text(json.dumps({
            "search": chosen.metrics, "task_metric": "accuracy",
            "cost": {k: chosen.metrics[k] for k in ("params", "encoder_params", "flops")},
            "validation": {"float": {"accuracy": 0.871, "error": 0.129},
                           "int8": {"accuracy": 0.866, "error": 0.134}}}))
        (out / "recovery.json").write_text(json.dumps({
            "config": {"method": "distill"},
            "before": {"search": {"accuracy": chosen.metrics["metric"]},
                       "validation": {"accuracy": 0.84}},
            "after": {"search": {"accuracy": chosen.metrics["metric"] + 0.02},
                      "validation": {"accuracy": 0.871}}}))
        summary["exported"] = {"validation": 0.871, "search": chosen.metrics["metric"] + 0.02}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    if loadtest:
        lt = run_dir / "loadtest"
        lt.mkdir()
        targets = {}
        for name, speed in (("base", 1.0), ("pruned", 2.1)):
            steps = [{"target": name, "step": i, "users": u, "ok_rps": min(u, 16) * 20 * speed,
                      "p50_ms": 8 / speed * (1 + u / 8), "p95_ms": 14 / speed * (1 + u / 6)}
                     for i, u in enumerate((1, 8, 16, 32))]
            targets[name] = {"url": f"http://127.0.0.1:80{len(targets)}", "steps": steps,
                             "saturation_users": 32 if name == "base" else None,
                             "max_ok_rps": max(s["ok_rps"] for s in steps)}
            (lt / f"locust-{name}.html").write_text("<html>locust</html>")
        (lt / "summary.json").write_text(json.dumps({
            "config": {"slo_ms": 200.0}, "targets": targets,
            "saturation_rule": "first step with p95 > 200 ms or failure rate > 1%",
            "files": {"locust_html": {"base": "locust-base.html",
                                      "pruned": "locust-pruned.html"}}}))
    return {"trials": trials, "full": full, "pick": chosen,
            "front": front_of(trials, objectives, full)}


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("report-run")
    facts = fake_run(run_dir)
    from nasprune.report.html import write_report

    facts["path"] = write_report(run_dir)
    facts["run_dir"] = run_dir
    return facts


# ----------------------------------------------------------------------------- the page


def _graph(text: str, div_id: str) -> list[dict]:
    """The traces Plotly will draw in ``div_id`` (read back from the page's script)."""
    start = text.index(f'document.getElementById("{div_id}")')
    data = text[text.index("[", start):]
    return json.JSONDecoder().raw_decode(data)[0]


def test_report_is_one_offline_file_with_every_part(report_run):
    text = report_run["path"].read_text()
    assert report_run["path"] == report_run["run_dir"] / "report.html"
    for anchor in ("config", "finetune", "pareto", "shape", "export", "loadtest"):
        assert f'<section id="section-{anchor}">' in text
    outside = re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|https?://cdn", text[:200]
                         + outside)  # nothing to fetch: Plotly's JS is inlined, once
    assert text.count("<script type=\"text/javascript\">/**") == 1
    assert "sst2 · synthetic-example" in text
    traces = _graph(text, "pareto")
    front = [t for t in traces if t["name"].startswith("Pareto front")]
    assert len(front) == 1 and len(front[0]["x"]) == len(report_run["front"])
    picked = [t for t in traces if t["name"].startswith("pick")]
    assert len(picked) == 1 and picked[0]["customdata"] == [report_run["pick"].id]
    assert picked[0]["x"][0] == pytest.approx(
        100 * report_run["pick"].metrics["encoder_params"]
        / report_run["full"]["encoder_params"])
    assert "validation): 0.8710" in picked[0]["hovertext"][0]  # the export's figure
    assert any(t["name"] == "unpruned model" for t in traces)
    # the export table names each row's split; recovery before/after; the int8 row
    for cell in ("<td>search</td>", "<td>validation</td>", "before recovery", "accuracy (int8)",
                 "locust-base.html"):
        assert cell in text


def test_pareto_x_axis_buttons_switch_between_costs(report_run):
    from nasprune.report.pareto_figure import pareto_figure
    from nasprune.report.run import RunContents

    fig, front = pareto_figure(RunContents(report_run["run_dir"]))
    (menu,) = fig.layout.updatemenus
    labels = [b.label for b in menu.buttons]
    assert labels == ["encoder params (%)", "total params", "FLOPs", "latency"]
    flops = menu.buttons[2].args
    assert flops[1]["xaxis.title.text"] == "FLOPs per sequence"
    assert sorted(flops[0]["x"][1]) == sorted(t.metrics["flops"] for t in front)
    assert fig.layout.xaxis.ticksuffix == "%"


def test_missing_parts_are_left_out_with_a_note(tmp_path):
    from nasprune.report.html import write_report

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model": "minilm-l6"}))
    text = write_report(tmp_path / "run", tmp_path / "elsewhere" / "r.html").read_text()
    assert "no search yet" in text and "no export yet" in text and "no pick yet" in text
    assert "no load test" in text and "no fine-tuning history yet" in text

    fake_run(tmp_path / "searched", n=10, export=False, loadtest=False, latency=False)
    text = write_report(tmp_path / "searched").read_text()
    assert "no export yet" in text and 'id="section-pareto"' in text
    assert "latency" not in [t.get("name") for t in _graph(text, "pareto")]

    with pytest.raises(NaspruneError, match="not a run directory"):
        write_report(tmp_path / "elsewhere")
    with pytest.raises(NaspruneError, match="not a directory"):
        write_report(tmp_path / "missing")


def test_report_command(tmp_path):
    fake_run(tmp_path / "run", n=8, loadtest=False)
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "nasprune", "report", str(tmp_path / "run"),
                           "--out", str(tmp_path / "r.html")], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r.html").stat().st_size > 1_000_000
    assert "r.html" in proc.stdout + proc.stderr
    proc = subprocess.run([sys.executable, "-m", "nasprune", "report", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "not a run directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_report_of_a_real_tiny_run(tmp_path, tiny_model_dir, toy_glue):
    """The files a real ``nasprune run`` writes, read by the report."""
    from nasprune.config import RunConfig, SearchConfig, TrainConfig
    from nasprune.data.tasks import DataConfig
    from nasprune.pipeline import run
    from nasprune.report.html import write_report

    cfg = RunConfig(model=str(tiny_model_dir),
                    data=DataConfig(task="sst2", data_dir=str(toy_glue),
                                    max_train_examples=64, max_eval_examples=32),
                    train=TrainConfig(epochs=2, batch_size=16, progress=False),
                    search=SearchConfig(trials=8, calibration_examples=16),
                    pick="params<=0.9", recover="least-squares", force=True)
    record = run(cfg, tmp_path, progress=False)
    text = write_report(tmp_path).read_text()
    traces = _graph(text, "pareto")
    (picked,) = [t for t in traces if t["name"].startswith("pick")]
    assert picked["customdata"] == [record["pick"]["id"]]
    from nasprune.core.subnet import Subnet
    from nasprune.report.text import compact

    shape = compact(Subnet(tuple(map(tuple, record["pick"]["subnet"]["layers"]))))
    assert f"shape: {shape}" in picked["hovertext"][0]
    assert f"accuracy (validation): {record['exported']['validation']:.4f}" in \
        picked["hovertext"][0]
    assert len(_graph(text, "finetune-curve")) == 2  # search and validation per epoch
    assert "Recovery of the pick (least-squares)" in text
    assert "no load test" in text


# ----------------------------------------------------------------------------- in Chromium


def _chromium():
    """A headless Chromium driven by Selenium, or a skip naming what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="selenium is not installed: pip install selenium")
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or \
        shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver") or shutil.which("chromium-driver")
    if browser is None or driver_path is None:
        pytest.skip("headless Chromium is not installed (make test installs it: "
                    "apt-get install -y chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,2400", "--allow-file-access-from-files"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def test_report_in_headless_chromium(report_run, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _chromium()
    try:
        driver.get(report_run["path"].resolve().as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            "const g = document.getElementById('pareto');"
            "return !!(g && g._fullLayout && g.querySelectorAll('.scatterlayer .point').length)"))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        graph = driver.execute_script(
            "const g = document.getElementById('pareto');"
            "return g.data.map(t => ({name: t.name, n: t.x.length, hover: t.hovertext,"
            " ids: t.customdata}));")
        by_name = {t["name"].split(" (")[0].split(":")[0]: t for t in graph}
        assert by_name["Pareto front"]["n"] == len(report_run["front"])
        assert by_name["pick 'encoder_params<=0.5'"]["ids"] == [report_run["pick"].id]
        drawn = driver.execute_script(
            "const g = document.getElementById('pareto');"
            "return Array.from(g.querySelectorAll('.scatterlayer .trace'))"
            ".map(t => t.querySelectorAll('.point').length);")
        assert drawn[1] == len(report_run["front"])  # the front's markers are on the page
        # hovering the pick shows its sub-network
        pick_trace = [i for i, t in enumerate(graph) if t["name"].startswith("pick")][0]
        hover = driver.execute_script(
            "const g = document.getElementById('pareto');"
            f"Plotly.Fx.hover(g, [{{curveNumber: {pick_trace}, pointNumber: 0}}]);"
            "const h = g.querySelector('.hoverlayer');"
            "return h ? h.textContent : '';")
        from nasprune.report.text import compact

        assert compact(report_run["pick"].subnet) in hover and "trial #" in hover
        # the x-axis buttons: FLOPs on the axis, the front's points follow
        buttons = driver.find_elements("css selector", "#pareto .updatemenu-button")
        assert len(buttons) == 4
        buttons[2].click()
        WebDriverWait(driver, 20).until(lambda d: d.execute_script(
            "return document.getElementById('pareto')._fullLayout.xaxis.title.text")
            == "FLOPs per sequence")
        flops = driver.execute_script("return document.getElementById('pareto').data[1].x;")
        assert sorted(flops) == sorted(t.metrics["flops"] for t in report_run["front"])
        buttons[0].click()
        # the other figures rendered too
        for div in ("finetune-curve", "pick-shape", "loadtest-0"):
            assert driver.execute_script(
                f"return !!document.getElementById('{div}')._fullLayout;"), div
        shot = tmp_path / "report.png"
        driver.set_window_size(1200, 1500)
        driver.execute_script("document.getElementById('pareto').scrollIntoView();"
                              "window.scrollBy(0, -70);")
        assert driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 20_000
        if os.environ.get("NASPRUNE_SAVE_SCREENSHOT") == "1":
            shutil.copyfile(shot, SCREENSHOT)
    finally:
        driver.quit()
