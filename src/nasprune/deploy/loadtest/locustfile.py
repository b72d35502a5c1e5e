"""The locustfile that ``deploy.loadtest.runner`` runs in its own ``python -m locust`` process.

Kept apart from everything else because locust monkey-patches the standard library with
gevent on import, which must not happen inside a process that runs torch or asyncio.
It is configured through environment variables (set by ``runner.run_target``):

- ``NASPRUNE_LT_TEXTS``: JSON file with a list of inputs, each ``[text]`` or ``[text, pair]``
- ``NASPRUNE_LT_USERS`` / ``NASPRUNE_LT_STEP_TIME``: the user steps and seconds per step
- ``NASPRUNE_LT_RECORD``: CSV file receiving one row per request and one per step change
- ``NASPRUNE_LT_TOKEN`` (optional bearer token), ``NASPRUNE_LT_THINK_MS``,
  ``NASPRUNE_LT_TIMEOUT_S`` (per-request timeout)
"""

import csv
import json
import os
import random
import time
from pathlib import Path

from locust import FastHttpUser, LoadTestShape, constant, events, task

_TEXTS = json.loads(Path(os.environ["NASPRUNE_LT_TEXTS"]).read_text())
_USERS = [int(u) for u in os.environ["NASPRUNE_LT_USERS"].split(",")]
_STEP_TIME = float(os.environ["NASPRUNE_LT_STEP_TIME"])
_TOKEN = os.environ.get("NASPRUNE_LT_TOKEN") or None
_THINK = float(os.environ.get("NASPRUNE_LT_THINK_MS", "0")) / 1000.0
_TIMEOUT = float(os.environ.get("NASPRUNE_LT_TIMEOUT_S", "30"))

# Open for the life of the process; line-buffered so a killed run keeps its rows.
_record = open(os.environ["NASPRUNE_LT_RECORD"], "w", newline="", buffering=1)  # noqa: SIM115
_writer = csv.writer(_record)
_writer.writerow(["kind", "step", "users", "time", "response_ms", "ok", "status"])
_state = {"step": -1}


@events.request.add_listener
def _on_request(request_type, name, response_time, response_length, response=None,
                exception=None, start_time=None, **kwargs):
    status = getattr(response, "status_code", 0) if response is not None else 0
    started = start_time if start_time is not None else time.time() - response_time / 1000.0
    _writer.writerow(["req", _state["step"], "", f"{started:.6f}", f"{response_time:.3f}",
                      int(exception is None), status])


@events.test_stop.add_listener
def _on_stop(**kwargs):
    _writer.writerow(["stop", _state["step"], "", f"{time.time():.6f}", "", "", ""])
    _record.flush()


class StepShape(LoadTestShape):
    """Hold each user count for the step time, then stop the test."""

    def tick(self):
        step = int(self.get_run_time() // _STEP_TIME)
        if step >= len(_USERS):
            return None
        if step != _state["step"]:
            _state["step"] = step
            _writer.writerow(["step", step, _USERS[step], f"{time.time():.6f}", "", "", ""])
        return _USERS[step], max(_USERS) * 10.0


class PredictUser(FastHttpUser):
    """One client sending validation-set inputs to POST /v1/predict, one after another."""

    wait_time = constant(_THINK)
    network_timeout = _TIMEOUT
    connection_timeout = _TIMEOUT

    @task
    def predict(self):
        item = random.choice(_TEXTS)
        body = {"text": item[0]} if len(item) == 1 else {"text": item[0], "text_pair": item[1]}
        headers = {"Authorization": f"Bearer {_TOKEN}"} if _TOKEN else None
        self.client.post("/v1/predict", json=body, headers=headers, name="/v1/predict")
