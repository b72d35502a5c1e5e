"""The server's Prometheus metrics (``GET /metrics``): requests, latency, batching, queue,
dropped requests, connections, and the served model."""

from __future__ import annotations

from nasprune.errors import require


class Metrics:
    """Prometheus metrics in a registry of their own, so several apps can live in one process."""

    def __init__(self, queue_depth):
        prom = require("prometheus_client", "serve")
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "nasprune_requests", "HTTP requests by path and status code",
            ["path", "status"], registry=self.registry)
        self.latency = prom.Histogram(
            "nasprune_request_latency_seconds", "Predict request latency, queueing included",
            buckets=(.005, .01, .025, .05, .075, .1, .15, .2, .3, .5, .75, 1, 2, 5, 10),
            registry=self.registry)
        self.batch_size = prom.Histogram(
            "nasprune_batch_size", "Items per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.inference = prom.Histogram(
            "nasprune_inference_seconds", "Model call duration (tokenisation included)",
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5),
            registry=self.registry)
        self.queue_depth = prom.Gauge(
            "nasprune_queue_depth", "Requests waiting for the batcher", registry=self.registry)
        self.queue_depth.set_function(queue_depth)
        self.computed_batches = prom.Counter(
            "nasprune_computed_batches", "Model calls made", registry=self.registry)
        self.computed_items = prom.Counter(
            "nasprune_computed_items", "Texts (or pairs) handed to the model",
            registry=self.registry)
        self.dropped = prom.Counter(
            "nasprune_dropped_requests",
            "Requests dropped before the model saw them: their client went away "
            "(client_closed), their --request-timeout passed in the queue (deadline), or "
            "they could not finish before it by the measured time per item (shed)",
            ["reason"], registry=self.registry)
        for reason in ("client_closed", "deadline", "shed"):
            self.dropped.labels(reason=reason)
        self.computed_for_answered = prom.Counter(
            "nasprune_computed_for_answered_requests",
            "Requests whose result came after they were answered otherwise (their client "
            "left while the model computed them): work done in vain", registry=self.registry)
        self.connections_closed = prom.Counter(
            "nasprune_connections_closed",
            "Connections the server closed: request head too slow (header_timeout) or too "
            "large (header_too_large), a chunked body declaring more than --max-body-bytes "
            "(body_too_large), or over --max-connections (max_connections)",
            ["reason"], registry=self.registry)
        for reason in ("header_timeout", "header_too_large", "body_too_large",
                       "max_connections"):
            self.connections_closed.labels(reason=reason)
        self.open_connections = prom.Gauge(
            "nasprune_open_connections", "Open HTTP connections", registry=self.registry)
        self.model_info = prom.Info("nasprune_model", "The served model",
                                    registry=self.registry)
        prom.ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, RSS, fds
        self._prom = prom

    def describe_model(self, description: dict) -> None:
        keys = ("model_dir", "architecture", "model_type", "num_layers", "hidden_size",
                "parameters", "problem_type", "max_length")
        self.model_info.info({("model" if k == "model_dir" else k): str(description.get(k))
                              for k in keys})

    def render(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
