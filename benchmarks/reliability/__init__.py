"""Reliability under hostile use: a real server on loopback, real processes, bounded loops.

Ten checks, against what an operator runs (``nasprune serve`` and
``nasprune search`` as child processes, ports chosen by the OS on 127.0.0.1), with tiny
random models so that the whole benchmark takes a few minutes:

1. **fuzz** (``fuzz.py``): >= 500 hostile requests over raw sockets (random methods, paths,
   headers, content types; broken, huge, deeply nested JSON; invalid UTF-8; bad framing).
   No answer may be 5xx, and the server must stay up without a traceback.
2. **overload** (``overload.py``): 300 requests from 48 concurrent clients against
   ``--max-queue 4``: every request is answered (200 or 503), no connection error or
   client timeout; the server's RSS (``/proc/PID/status``) before and after.
3. **slow_clients** (``slow_clients.py``): 100 connections that never finish (silent,
   partial headers, a half-sent body, 1-byte drips of headers or body): the time until the
   server closed all of them, against the configured timeout + 5 s.
4. **abandoned** (``abandoned.py``): heavy requests (64 long texts each) queued behind
   others; their clients give up after 1 s. ``computed`` = how many of them reached the
   model (``nasprune_computed_items_total``).
5. **kill_resume** (``kill_resume.py``): a search subprocess (toy objective, slowed) killed
   with SIGKILL 5 times at random moments and resumed; the final trial list vs. an
   uninterrupted run of the same seed.
6. **concurrent_search** (``concurrent_search.py``): two ``nasprune search`` on one
   finished tiny run directory at once: the second must fail at once with exit 2, one line
   naming the holder's PID.
7. **cli_mistakes** (``cli_mistakes.py``): every case of ``tests/cases/cli.py`` (the hand
   list ``MISTAKES`` and the mistakes generated from every number and path option of every
   command) as a real ``python -m nasprune`` process: how many printed a traceback.
8. **tamper** (``tamper.py``): every case of ``tests/cases/exports.py``'s ``TAMPER``
   applied to a fresh export: how many ``nasprune.load`` refused.
9. **overload_sustained** (``overload_sustained.py``): 40 closed-loop users of 64-text
   requests for 60 s against the server's defaults: shed at once, nothing computed for an
   answered request, goodput >= 50 % of the offline batched throughput.
10. **overload_after_slow_batch** (``overload_sustained.py``): the same load right after
   one batch was starved for 20 s (the server stopped with SIGSTOP while it computed):
   goodput >= 80 % of offline, as on a server that never had a slow batch.

``shared.py`` holds what the checks share; the case tables come from ``tests/cases``, which
the tests import too. Run from the repository root (the package imports ``benchmarks.*``
and ``tests.cases``, no path is patched):

    nice -n 19 .venv/bin/python -m benchmarks.reliability [--seed 0] [--only fuzz,tamper]

A quick trial of one check (writes nothing, prints its figures):

    nice -n 19 .venv/bin/python -m benchmarks.reliability --only overload_after_slow_batch \
        --users 8 --seconds 10 --stall 5

The figures are counts, not speeds (except overload_sustained's ratio, measured against
the same model in the same conditions).
"""
