"""Load-test pieces: parsing, step statistics, saturation, plots, and a real Locust run."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cases import WORDS

from nasprune.deploy.loadtest.config import LoadTestConfig, load_texts, parse_targets, parse_users
from nasprune.deploy.loadtest.plots import figure, plot
from nasprune.deploy.loadtest.stats import (
    StepStats,
    TargetResult,
    describe_statuses,
    failure_report,
    saturation,
    summarise_record,
)
from nasprune.deploy.serve.process import wait_ready
from nasprune.errors import NaspruneError


def _skip_without_locust() -> None:
    # Never import locust here: it monkey-patches threads and sockets with gevent.
    if importlib.util.find_spec("locust") is None:
        pytest.skip("locust is not installed")


# --------------------------------------------------------------------------- parsing


def test_parse_targets():
    assert parse_targets(["base=http://127.0.0.1:8000/", "pruned=http://127.0.0.1:8001"]) == {
        "base": "http://127.0.0.1:8000", "pruned": "http://127.0.0.1:8001"}
    for bad in (["base"], ["=http://x"], ["a=ftp://x"], ["a=http://x", "a=http://y"],
                ["a b=http://x"]):
        with pytest.raises(NaspruneError):
            parse_targets(bad)


def test_parse_users():
    assert parse_users("1,8,16,32") == [1, 8, 16, 32]
    assert parse_users("8:8:32") == [8, 16, 24, 32]
    for bad in ("", "a,b", "0,4", "8:0:32", "32:8:8"):
        with pytest.raises(NaspruneError):
            parse_users(bad)


def test_config_rejects_nonsense():
    with pytest.raises(NaspruneError):
        LoadTestConfig(targets={})
    with pytest.raises(NaspruneError):
        LoadTestConfig(targets={"a": "http://x"}, step_time=0)
    assert LoadTestConfig(targets={"a": "http://x"}, token="t").public_dict()["token"] == "set"


def test_load_texts_formats(tmp_path):
    (tmp_path / "v.tsv").write_text('sentence\tlabel\nit \'s "quoted good\t1\nbad\t0\n')
    assert load_texts(tmp_path / "v.tsv") == [["it 's \"quoted good"], ["bad"]]
    (tmp_path / "v.jsonl").write_text('{"text": "one", "y": 1}\n{"text": "two", "y": 0}\n')
    assert load_texts(tmp_path / "v.jsonl") == [["one"], ["two"]]
    (tmp_path / "v.csv").write_text("premise,hypothesis\np1,h1\np2,h2\n")
    assert load_texts(tmp_path / "v.csv") == [["p1", "h1"], ["p2", "h2"]]  # pair found
    (tmp_path / "w.csv").write_text("body,other\nx,y\n")
    assert load_texts(tmp_path / "w.csv", text_column="body") == [["x"]]
    with pytest.raises(NaspruneError, match="--text-column"):
        load_texts(tmp_path / "w.csv")
    with pytest.raises(NaspruneError, match="no column"):
        load_texts(tmp_path / "w.csv", text_column="nope")


@pytest.mark.slow
def test_load_texts_real_glue_sample(shared_data):
    rte = load_texts(shared_data / "rte" / "validation.tsv", limit=50)
    assert len(rte) == 50 and all(len(row) == 2 for row in rte)  # sentence1 + sentence2
    sst2 = load_texts(shared_data / "sst2" / "validation.tsv")
    assert len(sst2) == 872 and all(len(row) == 1 and row[0].strip() for row in sst2)


# --------------------------------------------------------------------------- statistics


def _write_record(path: Path, rows: list[list]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kind", "step", "users", "time", "response_ms", "ok", "status"])
        writer.writerows(rows)
    return path


def test_summarise_record_cuts_steps_by_start_time(tmp_path):
    t0 = 1000.0
    rows = [["step", 0, 1, t0, "", "", ""]]
    rows += [["req", 0, "", t0 + 0.1 * i, 10 + i, 1, 200] for i in range(10)]  # 10..19 ms
    rows += [["step", 1, 4, t0 + 2.0, "", "", ""]]
    # started in step 0, reported after step 1 began: still step 0
    rows += [["req", 1, "", t0 + 1.95, 100, 1, 200]]
    rows += [["req", 1, "", t0 + 2.0 + 0.05 * i, 50, int(i % 4 != 0), 200] for i in range(20)]
    rows += [["stop", 1, "", t0 + 6.0, "", "", ""]]
    steps = summarise_record("x", _write_record(tmp_path / "r.csv", rows))
    first, second = steps
    assert (first.users, first.requests, first.failures, first.duration_s) == (1, 11, 0, 2.0)
    assert first.rps == pytest.approx(11 / 2.0)
    assert first.p50_ms == pytest.approx(15.0)
    assert first.max_ms == 100
    assert (second.users, second.requests, second.failures) == (4, 20, 5)
    assert second.duration_s == pytest.approx(4.0)
    assert second.failure_rate == pytest.approx(0.25)
    assert second.ok_rps == pytest.approx(15 / 4.0)
    assert second.p95_ms == pytest.approx(50.0)


def test_summarise_record_without_steps_is_an_error(tmp_path):
    with pytest.raises(NaspruneError, match="no steps"):
        summarise_record("x", _write_record(tmp_path / "r.csv", []))


def _step(users, p95, failure_rate=0.0, requests=100):
    return StepStats("t", 0, users, requests, int(requests * failure_rate), failure_rate, 1.0,
                     requests, requests, p95 / 2, p95, p95 * 1.2, p95 / 2, p95 * 2)


def test_saturation_rule():
    steps = [_step(1, 20), _step(8, 150), _step(16, 250), _step(32, 900)]
    assert saturation(steps, slo_ms=200).users == 16
    assert saturation(steps, slo_ms=1000) is None
    failing = [_step(1, 20), _step(8, 30, failure_rate=0.02), _step(16, 40)]
    assert saturation(failing, slo_ms=200).users == 8
    assert saturation([_step(1, 20), _step(8, 30, failure_rate=0.01)], 200) is None  # <= 1 %


def test_plot_writes_png(tmp_path):
    results = [TargetResult("base", "u", [_step(1, 20), _step(8, 300)], 8, 100.0),
               TargetResult("pruned", "u", [_step(1, 10), _step(8, 100)], None, 100.0)]
    plot(results, 200, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wait_ready_fails_fast_on_a_closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NaspruneError, match="not ready"):
        wait_ready(f"http://127.0.0.1:{port}", timeout=0.5)


# --------------------------------------------------------------------------- real run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_model(directory: Path) -> Path:
    """A random 2-layer BERT classifier with a small WordPiece vocabulary."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True)
    words = "the a it is was not film movie good bad fun plot".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *"abcdefghijklmnopqrstuvwxyz"]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, num_labels=2,
                        id2label={0: "negative", 1: "positive"},
                        label2id={"negative": 0, "positive": 1})
    BertForSequenceClassification(config).save_pretrained(directory)
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    return directory


def _pair_texts(path: Path, n: int = 120) -> Path:
    """An RTE-shaped file (``sentence1``, ``sentence2``, ``label``) of toy sentences."""
    import random

    rng = random.Random(0)
    lines = ["index\tsentence1\tsentence2\tlabel"]
    lines += [f"{i}\t{' '.join(rng.sample(WORDS, 6))}\t{' '.join(rng.sample(WORDS, 4))}\t"
              f"{rng.choice(['entailment', 'not_entailment'])}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_run_loadtest_against_a_uvicorn_server(tmp_path):
    """The library API: a real uvicorn server on a free port, Locust in a subprocess."""
    _skip_without_locust()
    pytest.importorskip("fastapi")
    from nasprune.deploy.loadtest.runner import run_loadtest
    from nasprune.deploy.serve.app import create_app
    from nasprune.deploy.serve.config import ServeConfig
    from nasprune.deploy.serve.runner import serve_in_thread

    app = create_app(_tiny_model(tmp_path / "model"),
                     ServeConfig(token="tok", torch_threads=1, max_wait_ms=2))
    out = tmp_path / "lt"
    with serve_in_thread(app) as url:
        config = LoadTestConfig(targets={"a": url, "b": url}, users=[1, 3], step_time=2.0,
                                texts_from=_pair_texts(tmp_path / "pairs.tsv"), max_texts=100,
                                slo_ms=5000, out_dir=out, token="tok")
        results = run_loadtest(config)
        batch_sizes = app.state.metrics.batch_size.collect()[0].samples
    assert [r.name for r in results] == ["a", "b"]
    for result in results:
        assert result.saturation_users is None
        assert [s.users for s in result.steps] == [1, 3]
        for step in result.steps:
            assert step.requests > 0 and step.failures == 0  # pairs + token accepted
            assert step.p50_ms <= step.p95_ms <= step.p99_ms
    with open(out / "steps.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["target"], r["users"]) for r in rows] == [("a", "1"), ("a", "3"), ("b", "1"),
                                                         ("b", "3")]
    assert (out / "loadtest.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["targets"]) == {"a", "b"} and summary["texts"] == 100
    assert summary["failures"] == []
    for name in ("a", "b"):  # Locust's own HTML report is kept
        assert summary["files"]["locust_html"][name] == f"locust-{name}.html"
        assert "<html" in (out / f"locust-{name}.html").read_text().lower()
    count = next(s.value for s in batch_sizes if s.name == "nasprune_batch_size_count")
    assert count > 0


@pytest.mark.slow
def test_cli_loadtest_against_a_real_server(tmp_path, shared_data):
    """`nasprune serve` in one process, `nasprune loadtest` (Locust) in another."""
    _skip_without_locust()
    pytest.importorskip("fastapi")
    model = _tiny_model(tmp_path / "model")
    port = _free_port()
    env = {**os.environ, "NASPRUNE_TOKEN": "lt-secret", "HF_HUB_OFFLINE": "1"}
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen(
        [str(bin_dir / "nasprune"), "serve", str(model), "--port", str(port),
         "--threads", "1", "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    out = tmp_path / "lt"
    try:
        wait_ready(url, timeout=60)
        run = subprocess.run(
            [str(bin_dir / "nasprune"), "loadtest", "--target", f"tiny={url}",
             "--users", "1,4", "--step-time", "3", "--slo-ms", "5000",
             "--texts-from", str(shared_data / "sst2" / "validation.tsv"), "--out", str(out)],
            env=env, capture_output=True, text=True, timeout=120)
        import httpx

        metrics = httpx.get(f"{url}/metrics",
                            headers={"Authorization": "Bearer lt-secret"}).text
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "tiny: not saturated up to 4 users" in run.stdout

    with open(out / "steps.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["target"], r["users"]) for r in rows] == [("tiny", "1"), ("tiny", "4")]
    for row in rows:
        assert int(row["requests"]) > 0
        assert int(row["failures"]) == 0  # the token went along
        assert float(row["p50_ms"]) <= float(row["p95_ms"]) <= float(row["p99_ms"])
        assert 2.0 < float(row["duration_s"]) < 5.0
    assert (out / "loadtest.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["targets"]["tiny"]["saturation_users"] is None
    assert summary["config"]["token"] == "set"
    assert (out / "raw" / "tiny_stats.csv").is_file()  # Locust's own CSV is kept

    # What Locust counted as successes, the server counted as 200s (it may have answered
    # a few more that were in flight when Locust stopped).
    served = next(float(line.split()[-1]) for line in metrics.splitlines()
                  if line.startswith('nasprune_requests_total{path="/v1/predict",status="200"}'))
    recorded = sum(int(r["requests"]) for r in rows)
    assert recorded <= served <= recorded + 4
    assert not math.isnan(float(rows[1]["p95_ms"]))


# --------------------------------------------------------------------------- issue 16/17


def test_summarise_record_counts_failure_statuses(tmp_path):
    t0 = 1000.0
    rows = [["step", 0, 1, t0, "", "", ""]]
    rows += [["req", 0, "", t0 + 0.01 * i, 5, 0, 401] for i in range(8)]
    rows += [["req", 0, "", t0 + 0.2, 5, 0, 0], ["req", 0, "", t0 + 0.3, 5, 1, 200]]
    rows += [["stop", 0, "", t0 + 1.0, "", "", ""]]
    [step] = summarise_record("x", _write_record(tmp_path / "r.csv", rows))
    assert step.failures == 9 and step.failure_statuses == {"401": 8, "0": 1}
    assert describe_statuses(step.failure_statuses) == "HTTP 401 x8, no response x1"


def test_failure_report_names_the_status_codes():
    failing = _step(1, 20, failure_rate=1.0)
    failing.failure_statuses = {"401": 100}
    fine = _step(8, 20, failure_rate=0.4)
    fine.failure_statuses = {"503": 40}
    results = [TargetResult("locked", "u", [failing], 1, 0.0),
               TargetResult("busy", "u", [_step(1, 20), fine], 8, 100.0)]
    [line] = failure_report(results, 0.5)
    assert line.startswith("locked: 100% of 100 requests failed at 1 users (HTTP 401 x100)")
    assert "token" in line and "--max-failure-rate 50%" in line
    assert len(failure_report(results, 0.3)) == 2
    assert failure_report(results, 1.0) == []
    with pytest.raises(NaspruneError, match="max-failure-rate"):
        LoadTestConfig(targets={"a": "http://x"}, max_failure_rate=1.5)


def test_plot_has_integer_user_ticks_and_a_saturation_caption_only_when_saturated():
    import matplotlib.pyplot as plt

    calm = [TargetResult("base", "u", [_step(1, 20), _step(2, 30), _step(3, 40)], None, 10.0)]
    fig = figure(calm, 200)
    try:
        assert fig._suptitle is None or not fig._suptitle.get_text()
        fig.canvas.draw()
        for axis in fig.axes:
            ticks = [t for t in axis.get_xticks() if axis.get_xlim()[0] <= t <= axis.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
    finally:
        plt.close(fig)
    saturated = [TargetResult("base", "u", [_step(1, 20), _step(2, 300)], 2, 10.0)]
    fig = figure(saturated, 200)
    try:
        assert "saturation" in fig._suptitle.get_text()
    finally:
        plt.close(fig)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    env.pop("NASPRUNE_TOKEN", None)
    return subprocess.run([str(Path(sys.executable).parent / "nasprune"), *args], env=env,
                          capture_output=True, text=True, timeout=180)


def test_users_spec_is_shown_as_typed_not_as_an_emoji(tmp_path):
    """Finding 11: `--users a:b:c` was rendered by rich with :b: as an emoji."""
    run = _cli("loadtest", "--target", "x=http://127.0.0.1:9", "--users", "a:b:c",
               "--texts-from", str(tmp_path / "none.tsv"))
    assert run.returncode == 2
    assert "'a:b:c'" in run.stderr and "\U0001f171" not in run.stderr, run.stderr
    run = _cli("loadtest", "--target", "x[bold]=http://127.0.0.1:9", "--users", "1",
               "--texts-from", str(tmp_path / "none.tsv"))
    assert run.returncode == 2 and "x[bold]" in run.stderr, run.stderr


@pytest.fixture(scope="module")
def tiny_served_model(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("lt") / "model")


def test_loadtest_without_the_token_fails_naming_401(tmp_path, tiny_served_model, toy_glue):
    """Finding 10: exit 0 and "saturates at 1 users" when every request got 401."""
    pytest.importorskip("fastapi")
    from nasprune.deploy.serve.app import create_app
    from nasprune.deploy.serve.config import ServeConfig
    from nasprune.deploy.serve.runner import serve_in_thread

    app = create_app(tiny_served_model, ServeConfig(token="s3cret", torch_threads=1))
    with serve_in_thread(app) as url:
        run = _cli("loadtest", "--target", f"locked={url}", "--users", "1", "--step-time",
                   "1", "--texts-from", str(toy_glue / "sst2" / "validation.tsv"),
                   "--out", str(tmp_path / "lt"))
    assert run.returncode != 0, run.stdout + run.stderr
    assert "401" in run.stderr and "token" in run.stderr
    assert "saturates" not in run.stdout + run.stderr


def test_loadtest_fails_when_a_step_mostly_fails(tmp_path, tiny_served_model, toy_glue):
    """Past the preflight, a step above --max-failure-rate fails the run, naming statuses."""
    _skip_without_locust()
    pytest.importorskip("fastapi")
    from nasprune.deploy.serve.app import create_app
    from nasprune.deploy.serve.config import ServeConfig
    from nasprune.deploy.serve.predictor import Predictor
    from nasprune.deploy.serve.runner import serve_in_thread

    class FailsAfterFirst(Predictor):
        calls = 0

        def predict(self, items):
            type(self).calls += 1
            if type(self).calls > 1:  # the preflight passes, the load test does not
                raise RuntimeError("model broke")
            return super().predict(items)

    base = Predictor.from_dir(tiny_served_model)
    app = create_app(FailsAfterFirst(base.model, base.tokenizer),
                     ServeConfig(torch_threads=1))
    out = tmp_path / "lt"
    with serve_in_thread(app) as url:
        run = _cli("loadtest", "--target", f"broken={url}", "--users", "1,2", "--step-time",
                   "1.5", "--texts-from", str(toy_glue / "sst2" / "validation.tsv"),
                   "--out", str(out))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "broken: 100%" in run.stderr and "HTTP 500" in run.stderr, run.stderr
    assert "saturates" not in run.stdout and "not saturated" not in run.stdout
    assert "locust-broken.html" in run.stderr  # the "wrote ..." line names Locust's report
    assert (out / "locust-broken.html").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failures"] and summary["targets"]["broken"]["steps"][0][
        "failure_statuses"]["500"] > 0
