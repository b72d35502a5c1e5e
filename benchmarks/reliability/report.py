"""The Markdown page of the reliability benchmark (benchmarks/results/reliability.md)."""

from __future__ import annotations

from benchmarks.reliability.shared import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
)


def markdown(figures: dict, detail: dict, elapsed: float) -> str:
    f, d = figures, detail
    slow_limit = max(HEADER_TIMEOUT, BODY_TIMEOUT) + 5
    closed = f["slow_clients"]["all_closed_within_s"]
    targets = [
        ("fuzz: no 5xx", f["fuzz"]["status_5xx"] == 0,
         f"{f['fuzz']['status_5xx']} of {f['fuzz']['requests']}"),
        ("overload: no connection errors or timeouts", f["overload"]["errors"] == 0,
         f"{f['overload']['errors']} of {f['overload']['requests']}"),
        (f"slow clients: all closed within {slow_limit:g} s (timeout + 5 s)",
         closed is not None and closed <= slow_limit,
         f"{closed} s" if closed is not None else "not all closed"),
        ("abandoned: none computed", f["abandoned"]["computed"] == 0,
         f"{f['abandoned']['computed']:g} of {f['abandoned']['requests']}"),
        ("kill/resume: nothing lost", f["kill_resume"]["lost"] == 0,
         str(f["kill_resume"]["lost"])),
        ("kill/resume: nothing doubled", f["kill_resume"]["doubled"] == 0,
         str(f["kill_resume"]["doubled"])),
        ("kill/resume: same trials as uninterrupted",
         f["kill_resume"]["same_as_uninterrupted"], str(f["kill_resume"]["same_as_uninterrupted"])),
        ("concurrent search: second refused", f["concurrent_search"]["second_refused"],
         str(f["concurrent_search"]["second_refused"])),
        ("CLI mistakes: no traceback", f["cli_mistakes"]["tracebacks"] == 0,
         f"{f['cli_mistakes']['tracebacks']} of {f['cli_mistakes']['cases']}"),
        ("tamper: every case detected", f["tamper"]["detected"] == f["tamper"]["cases"],
         f"{f['tamper']['detected']} of {f['tamper']['cases']}"),
    ]
    if "overload_sustained" in f:
        os_ = f["overload_sustained"]
        targets += [
            ("sustained overload: nothing computed for an answered request",
             os_["computed_for_answered"] == 0, str(os_["computed_for_answered"])),
            ("sustained overload: goodput >= 50 % of offline batched throughput",
             os_["goodput_ratio"] >= 0.5, f"{os_['goodput_ratio']:.0%}"),
        ]
    if "overload_after_slow_batch" in f:
        sb = f["overload_after_slow_batch"]
        targets += [
            (f"after one slow batch ({sb['slow_batch_s']:g} s): goodput >= 80 % of offline",
             sb["goodput_ratio"] >= 0.8, f"{sb['goodput_ratio']:.0%}"),
        ]
    met = sum(ok for _, ok, _ in targets)
    fz, ov, sc, ab, kr, cs, cm, tp = (d[k] for k in (
        "fuzz", "overload", "slow_clients", "abandoned", "kill_resume", "concurrent_search",
        "cli_mistakes", "tamper"))
    lines = [
        "# Reliability: hostile requests, overload, slow and abandoned clients, kills, "
        "concurrent runs, user mistakes, tampered exports",
        "",
        "Real processes on loopback: `nasprune serve` (tiny random BERT exports, 1 torch "
        "thread, port chosen by the OS), `nasprune search`, `python -m nasprune`; the "
        "benchmark and its children ran on a 2-core machine shared with other jobs.",
        "",
        f"**Targets met: {met} of {len(targets)}.**",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {name} | {value} | {'met' if ok else '**not met**'} |"
          for name, ok, value in targets],
        "",
        "## Details",
        "",
        f"- **fuzz** ({f['fuzz']['requests']} requests over raw sockets, 8 at a time; server "
        f"`--header-timeout {HEADER_TIMEOUT:g} --body-timeout {BODY_TIMEOUT:g}`): statuses "
        + ", ".join(f"{k}: {v}" for k, v in fz["statuses"].items())
        + f". Server up afterwards: {fz['alive_after']}; tracebacks in its log: "
        f"{fz['server_tracebacks']}; 5xx in its own request counter: "
        f"{fz['server_counted_5xx']:g}."
        + (f" 5xx cases: {fz['five_xx_cases']}." if fz["five_xx_cases"] else ""),
        f"- **overload** ({ov['clients']} concurrent clients, `--max-queue 4`, 8 texts of 60 "
        f"words per request, medium random BERT): {f['overload']['ok']} answered 200, "
        f"{f['overload']['status_503']} answered 503 ({ov['503_with_retry_after']} with "
        f"`Retry-After`), {f['overload']['errors']} client errors or timeouts"
        f"{' ' + str(ov['errors_by_kind']) if ov['errors_by_kind'] else ''} in "
        f"{ov['took_s']} s; RSS {ov['rss_before_mb']} -> {ov['rss_after_mb']} MB "
        f"({f['overload']['rss_growth_mb']:+g} MB); tracebacks in the server log: "
        f"{ov['server_tracebacks']}.",
        f"- **slow clients** ({sc['opened_in_s']} s to open {f['slow_clients']['connections']}): "
        + "; ".join(f"{k} {v['closed']}/{v['connections']} closed, last at "
                    f"{v['last_closed_s']} s" for k, v in sc["by_kind"].items())
        + f". Open files of the server {sc['open_files']['before']} -> peak "
        f"{sc['open_files']['peak']} -> {sc['open_files']['after']}; closed for a slow head: "
        f"{sc['closed_by_header_timeout']:g}, 408 for a slow body: {sc['answered_408']:g}; "
        f"tracebacks: {sc['server_tracebacks']}.",
        f"- **abandoned** ({f['abandoned']['requests']} requests of {ab['items_per_request']} "
        f"texts of 400 words, clients gone after 1 s, queued behind {ab['blockers']} blocking "
        f"requests of the same size, one of which took {ab['one_heavy_request_s']} s alone): "
        f"{f['abandoned']['computed']:g} computed; dropped from the queue as client_closed: "
        f"{ab['dropped_client_closed']:g}; counted as 499: {ab['counted_499']:g}, as 5xx: "
        f"{ab['counted_5xx']:g}; blockers answered {ab['blocker_statuses']}; model still busy "
        f"when the clients left: {ab['model_busy_when_clients_gave_up']}.",
        f"- **kill/resume** ({kr['searcher']}, seed {kr['seed']}, "
        f"{f['kill_resume']['trials']} trials): SIGKILL when the store held "
        f"{kr['stored_at_each_kill']} trials (plus 0-0.1 s); {kr['evaluations']} evaluations "
        f"in all, {kr['evaluated_twice']} of a candidate evaluated before (the one in flight "
        f"at a kill); the final list equals the uninterrupted run's "
        f"({kr['reference_trials']} trials) in order: "
        f"{f['kill_resume']['same_as_uninterrupted']} (first {kr['same_prefix']} identical).",
        f"- **concurrent search** (a finished tiny run; the first `nasprune search` paused "
        f"with SIGSTOP while it held the lock): second exit {cs['second_exit']} after "
        f"{cs['second_took_s']} s: `{cs['second_stderr']}`. The first then finished with exit "
        f"{cs['first_exit']}; the store holds {cs['trials_after']} trials, "
        f"{cs['distinct_after']} distinct. (The second's seconds are its start-up under `nice` "
        f"on the loaded machine: it imports torch and transformers and reads the data "
        f"before it asks for the lock; it did not wait for the lock, which the paused first "
        f"process never released.)",
        f"- **CLI mistakes** (`tests/cases/cli.py`: `MISTAKES` and "
        f"{f['cli_mistakes'].get('generated', 0)} generated from every number and path "
        f"option): exit 2 in {cm['exit_2']}, one "
        f"line in {cm['one_line']}, the expected message in {cm['expected_message']}, a run "
        f"directory written in {cm['wrote_a_run_directory']} of {f['cli_mistakes']['cases']}."
        + (f" Not as expected: {cm['not_as_expected']}." if cm["not_as_expected"] else ""),
        f"- **tamper** (`tests/cases/exports.py` `TAMPER`, remote and vanilla layouts): "
        f"`nasprune.load` refused {f['tamper']['detected']} of {f['tamper']['cases']} with one "
        f"line ({tp['message_as_expected']} with the expected words); the server's loader "
        f"refused {tp['server_loader_refused']}."
        + (f" Not refused cleanly: {tp['not_refused_cleanly']}." if tp["not_refused_cleanly"]
           else ""),
        *_sustained(f, d),
        "",
        f"Total time {elapsed / 60:.1f} min. `.venv/bin/python -m "
        "benchmarks.reliability` (from the repository root).",
    ]
    return "\n".join(lines)


def _sustained(f: dict, d: dict) -> list[str]:
    return _sustained_only(f, d) + _after_slow_batch(f, d)


def _after_slow_batch(f: dict, d: dict) -> list[str]:
    lines = []
    if "overload_after_slow_batch" in f:
        sb, sd = f["overload_after_slow_batch"], d["overload_after_slow_batch"]
        lines.append(
            f"- **after one slow batch** (the server stopped with SIGSTOP for {sd['stall_s']:g} "
            f"s while it computed one 64-text request, which took {sb['slow_batch_s']:g} s and "
            f"was answered {sd['slow_request_status']}; then {sd['users']} closed-loop users "
            f"for {sd['seconds']} s as above): {sb['requests']} requests, {sb['ok']} answered "
            f"200 (median {sd['latency_ok_p50_s']} s), {sb['shed']} shed with 503; computed "
            f"for a request already answered: {sb['computed_for_answered']}; goodput "
            f"{sd['goodput_texts_per_s']} texts/s = {sb['goodput_ratio']:.0%} of the offline "
            f"{sd['offline_texts_per_s']} texts/s; tracebacks {sd['server_tracebacks']}.")
    return lines


def _sustained_only(f: dict, d: dict) -> list[str]:
    if "overload_sustained" not in f:
        return []
    os_, od = f["overload_sustained"], d["overload_sustained"]
    return [
        f"- **sustained overload** ({od['users']} closed-loop users, {od['items_per_request']} "
        f"texts of 60 words per request, {od['seconds']} s, `nasprune serve` defaults with "
        f"`--threads 1`, a random BERT of MiniLM-L6's size; a client waits `Retry-After` "
        f"after a 503): "
        f"{os_['requests']} requests, {os_['ok']} answered 200 (median "
        f"{od['latency_ok_p50_s']} s, longest {od['latency_ok_max_s']} s), {os_['shed']} shed "
        f"with 503 ({od['shed_by_server']:g} on arrival or before their batch, "
        f"{od['expired_in_queue']:g} expired in the queue); computed for a request already "
        f"answered: {os_['computed_for_answered']}; goodput {od['goodput_texts_per_s']} "
        f"texts/s = {os_['goodput_ratio']:.0%} of the offline {od['offline_texts_per_s']} "
        f"texts/s (same model, batches of 64, 1 thread); client errors "
        f"{od['errors_by_kind'] or 0}; tracebacks {od['server_tracebacks']}.",
    ]
