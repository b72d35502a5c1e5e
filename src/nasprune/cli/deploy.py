"""``nasprune export``, ``serve`` and ``loadtest``: a pick as a smaller model, served over
HTTP and load-tested."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from nasprune.cli.common import (
    _R,
    MAX_POSITIONS,
    PICK,
    DeviceOpt,
    ForceOpt,
    InDir,
    InFile,
    Layout,
    Number,
    OutDir,
    PickOpt,
    Quantize,
    Recovery,
    _value,
    app,
    console,
    model_limits,
    opt,
    quiet_libraries,
)
from nasprune.errors import NaspruneError

# ---- export: a picked sub-network as a deployable model (nasprune.deploy.export.writer) ----


@app.command(epilog="Example: nasprune export runs/sst2 --pick 'encoder_params<=0.4' --out pruned/ "
             "--format onnx --quantize int8")
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory holding supernet/ and search/trials.db.", parser=InDir())],
    pick: PickOpt = _R.pick,
    out: Annotated[Path | None, opt("Export directory (default RUN_DIR/export).", PICK, parser=OutDir())] = None,
    format: Annotated[str, opt("Export format(s), comma-separated: hf (safetensors + config, always written), onnx (plus model.onnx).", PICK, "--format")] = "hf",
    quantize: Annotated[Quantize | None, opt("int8: ONNX Runtime static quantization calibrated on training texts (model.int8.onnx; implies onnx).", PICK)] = None,
    layout: Annotated[Layout, opt("auto: a plain transformers model when the sub-network allows it, else the remote-code class; or force vanilla / remote.", PICK)] = "auto",
    recover: Annotated[Recovery | None, opt("Recovery of the pick before export (default: the run's --recover).", PICK)] = None,
    validate: Annotated[bool, opt("Re-measure the metric of each backend on the run's validation set.", PICK)] = True,
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Write the picked sub-network as a smaller model: safetensors, config, tokenizer,
    model card, checksums; recovered as the run's export stage would."""
    from nasprune.config import RunConfig

    formats = tuple(f.strip() for f in format.split(",") if f.strip())  # as run --format
    RunConfig(pick=pick, export_formats=formats, quantize=_value(quantize),
              recover=_value(recover) or "none")  # checks them
    from nasprune.rundir import RunDir

    quiet_libraries()
    from nasprune.pipeline.export import export_pick

    run = RunDir(run_dir)
    with run if run.is_run() else _nothing():
        path = export_pick(run_dir, pick, out, formats=formats, quantize=_value(quantize),
                           recover=_value(recover), validate=validate, layout=_value(layout),
                           progress=lambda m: console.print(escape(m)), force=force,
                           device=device)
    console.print(f"[green]exported[/] {escape(str(path))}")
    typer.echo((path / "metrics.json").read_text().strip())


@app.command(epilog="Example: python -c 'from transformers import AutoModelForSequenceClassification as A; "
             "A.from_pretrained(\"pruned\", trust_remote_code=True).save_pretrained(\"copy\")' && nasprune adopt copy")
def adopt(
    model_dir: Annotated[Path, typer.Argument(help="A remote-code export re-saved with save_pretrained (no manifest.json).", parser=InDir())],
) -> None:
    """Check that a re-saved export loads with nasprune's own classes, then write its
    subnet.json and manifest.json so that nasprune load / serve accept it."""
    quiet_libraries()
    from nasprune.deploy.export.adopt import adopt as adopt_dir

    path = adopt_dir(model_dir)
    console.print(f"[green]verified[/] {escape(str(path))}: nasprune serve accepts it")


def _nothing():
    from contextlib import nullcontext

    return nullcontext()


# ---- serve / loadtest: HTTP endpoint with dynamic batching, stepped-users load test ----

COUNT = Number(True, 1)
SECONDS = Number(False, 0.001, 1e6)  # more than 11 days overflows the event loop's timers


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="Hugging Face classifier directory or an export.", parser=InDir(), callback=model_limits)],
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless you mean it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port, 0..65535 (0 = any free port).", parser=Number(True, 0, 65535))] = 8000,
    max_batch_size: Annotated[int, typer.Option(help="Most texts per model call.", parser=COUNT)] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="Longest wait for a batch to fill.", parser=Number(False, 0, 60_000))] = 5.0,
    max_queue: Annotated[int, typer.Option(help="Waiting requests before answering 503.", parser=COUNT)] = 256,
    token: Annotated[str | None, typer.Option(envvar="NASPRUNE_TOKEN", show_envvar=True, help="Bearer token required on /v1/* and /metrics.")] = None,
    max_items: Annotated[int, typer.Option(help="Texts (or pairs) per request.", parser=COUNT)] = 64,
    max_text_chars: Annotated[int, typer.Option(help="Characters per text.", parser=COUNT)] = 20_000,
    max_body_bytes: Annotated[int, typer.Option(help="Request body limit (413 beyond).", parser=COUNT)] = 1_000_000,
    max_length: Annotated[int, typer.Option(help="Tokens kept per input (at most the model's positions).", parser=Number(True, 2, MAX_POSITIONS * 16), callback=model_limits)] = 128,
    chunk_size: Annotated[int, typer.Option(help="A batch runs length-sorted in chunks of this many texts.", parser=COUNT)] = 8,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.", parser=Number(True, 1, 1024))] = None,
    device: Annotated[str, typer.Option(help="Where the model runs: cpu, auto, cuda, cuda:1, mps (ONNX Runtime on a GPU needs onnxruntime-gpu).")] = "cpu",
    log_level: Annotated[str, typer.Option(help="critical, error, warning, info, debug, trace.")] = "info",
    request_timeout: Annotated[float, typer.Option(help="Seconds a request may wait for and spend in the model once its body is in; 503 beyond (a request still queued then is never computed).", parser=SECONDS)] = 10.0,
    header_timeout: Annotated[float, typer.Option(help="Seconds for the request line and headers, from connect or the previous response; the connection is closed beyond.", parser=SECONDS)] = 10.0,
    body_timeout: Annotated[float, typer.Option(help="Seconds for the whole request body; 408 beyond.", parser=SECONDS)] = 30.0,
    keep_alive: Annotated[float, typer.Option(help="Seconds an idle kept-alive connection stays open.", parser=SECONDS)] = 5.0,
    drain_timeout: Annotated[float, typer.Option(help="On SIGINT/SIGTERM, seconds running requests get to finish.", parser=SECONDS)] = 5.0,
    max_connections: Annotated[int, typer.Option(help="Open connections; more are answered 503 and closed.", parser=Number(True, 1, 1_000_000))] = 512,
    max_header_bytes: Annotated[int, typer.Option(help="Request line and headers limit (431 beyond).", parser=Number(True, 1024))] = 32_768,
) -> None:
    """Serve a classifier over HTTP: POST /v1/predict; POST / (Hugging Face's
    text-classification API, for huggingface_hub.InferenceClient); /healthz, /readyz,
    /v1/model, /metrics; /docs (the API, served offline)."""
    from rich.markup import escape as plain

    from nasprune.deploy.serve.config import ServeConfig
    from nasprune.deploy.serve.runner import serve as run_server

    try:  # every option is checked (and the port bound) before the model loads
        cfg = ServeConfig(host=host, port=port, max_batch_size=max_batch_size,
                          max_wait_ms=max_wait_ms, max_queue=max_queue, token=token,
                          max_items=max_items, max_text_chars=max_text_chars,
                          max_body_bytes=max_body_bytes, max_length=max_length,
                          chunk_size=chunk_size, torch_threads=threads, device=device,
                          log_level=log_level,
                          request_timeout_s=request_timeout, header_timeout_s=header_timeout,
                          body_timeout_s=body_timeout, keep_alive_s=keep_alive,
                          drain_timeout_s=drain_timeout, max_connections=max_connections,
                          max_header_bytes=max_header_bytes)
        from nasprune.core.models import pick_device

        pick_device(device)  # a GPU this machine lacks: refused before the port is bound

        def announce(url: str, runtime: dict) -> None:  # port bound, model loaded
            if host not in ("127.0.0.1", "localhost", "::1") and not cfg.token:
                console.print(f"[yellow]warning[/]: serving on {plain(host)} without a token",
                              emoji=False)
            how = (f"{runtime['backend']}, {runtime['precision']}: "
                   f"{runtime.get('precision_reason', '')}")
            console.print(f"serving {plain(str(model_dir))} on {plain(url)} ({plain(how)})",
                          emoji=False, highlight=False, soft_wrap=True)

        run_server(model_dir, cfg, announce=announce, before_load=quiet_libraries)
        console.print("stopped")  # a signal uvicorn handled without re-raising it
    except NaspruneError as exc:  # printed here: user text must not become markup or emoji
        console.print(f"[bold red]error:[/] {plain(str(exc))}", emoji=False, highlight=False,
                      soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it handled
        console.print("stopped")


@app.command()
def loadtest(
    target: Annotated[list[str], typer.Option(help="NAME=URL of a nasprune server; repeat for several.")],
    texts_from: Annotated[Path, typer.Option(help="Validation file (TSV/CSV/JSONL) to draw inputs from.", parser=InFile())],
    users: Annotated[str, typer.Option(help="User steps: 1,8,16,32 or START:STEP:MAX.")] = "1,8,16,32",
    step_time: Annotated[float, typer.Option(help="Seconds each user count is held.", parser=SECONDS)] = 10.0,
    text_column: Annotated[str | None, typer.Option(help="Text column (default: sentence, text, sentence1, ...).")] = None,
    pair_column: Annotated[str | None, typer.Option(help="Second text column for pair tasks.")] = None,
    slo_ms: Annotated[float, typer.Option(help="p95 latency objective; defines saturation.", parser=Number(False, 0, 1e9, low_open=True))] = 200.0,
    out: Annotated[Path, typer.Option(help="Folder for steps.csv, summary.json, loadtest.png.", parser=OutDir())] = Path("loadtest"),
    think_ms: Annotated[float, typer.Option(help="Pause between a user's requests.", parser=Number(False, 0, 1e9))] = 0.0,
    token: Annotated[str | None, typer.Option(envvar="NASPRUNE_TOKEN", show_envvar=True, help="Bearer token for the targets.")] = None,
    max_texts: Annotated[int, typer.Option(help="Inputs sampled from the file.", parser=COUNT)] = 2000,
    max_failure_rate: Annotated[float, typer.Option(help="Fail (exit 1, naming the status codes) when a step's failure rate exceeds this.", parser=Number(False, 0, 1))] = 0.5,
) -> None:
    """Load-test one or more endpoints with rising users; CSV, plot and saturation points."""
    from rich.console import Console as StdoutConsole
    from rich.markup import escape as plain
    from rich.table import Table

    from nasprune.deploy.loadtest.config import LoadTestConfig, parse_targets, parse_users
    from nasprune.deploy.loadtest.runner import run_loadtest
    from nasprune.deploy.loadtest.stats import describe_statuses, failure_report

    def say(text: str, *, stdout: bool = False) -> None:  # user text is never markup/emoji
        (StdoutConsole() if stdout else console).print(text, emoji=False, highlight=False,
                                                       soft_wrap=True)

    try:
        cfg = LoadTestConfig(targets=parse_targets(target), users=parse_users(users),
                             step_time=step_time, texts_from=texts_from,
                             text_column=text_column, pair_column=pair_column, slo_ms=slo_ms,
                             out_dir=out, think_ms=think_ms, token=token, max_texts=max_texts,
                             max_failure_rate=max_failure_rate)
        total = len(cfg.users) * cfg.step_time * len(cfg.targets)
        say(f"load-testing {plain(', '.join(cfg.targets))}: users {cfg.users}, "
            f"{cfg.step_time:g} s per step (~{total:.0f} s)")
        results = run_loadtest(cfg)
    except NaspruneError as exc:
        say(f"[bold red]error:[/] {plain(str(exc))}")
        raise typer.Exit(2) from None
    table = Table("target", "users", "req/s", "p50 ms", "p95 ms", "p99 ms", "failures",
                  "failed with")
    for result in results:
        for s in result.steps:
            table.add_row(plain(result.name), str(s.users), f"{s.ok_rps:.1f}",
                          f"{s.p50_ms:.0f}", f"{s.p95_ms:.0f}", f"{s.p99_ms:.0f}",
                          f"{s.failure_rate:.1%}",
                          describe_statuses(s.failure_statuses) if s.failures else "")
    StdoutConsole().print(table)
    failed = failure_report(results, cfg.max_failure_rate)
    for result in results:
        if any(line.startswith(f"{result.name}: ") for line in failed):
            continue  # no saturation point: the step failed
        where = (f"saturates at {result.saturation_users} users"
                 if result.saturation_users is not None
                 else f"not saturated up to {max(cfg.users)} users")
        say(f"{plain(result.name)}: {where} (p95 > {cfg.slo_ms:g} ms or > 1 % failures); "
            f"peak {result.max_ok_rps:.1f} req/s", stdout=True)
    reports = ", ".join(str(out / f"locust-{r.name}.html") for r in results)
    say(f"wrote {plain(str(out / 'steps.csv'))}, {plain(str(out / 'summary.json'))}, "
        f"{plain(str(out / 'loadtest.png'))} and Locust's report{'s' if len(results) > 1 else ''}"
        f" {plain(reports)}")
    if failed:
        for line in failed:
            say(f"[bold red]failed:[/] {plain(line)}")
        raise typer.Exit(1)
