"""Serving (``nasprune serve``, extra ``[serve]``): one exported or plain Hugging Face
classifier behind an HTTP API with dynamic batching, bounded queues and timeouts,
Prometheus metrics and a graceful drain on SIGINT/SIGTERM. ``config`` holds the settings,
``predictor`` the model, ``batcher`` the batching, ``app`` the routes, ``guard`` and
``body`` the request checks, ``http`` the connection limits, ``runner`` uvicorn, and
``process`` the server as a child process (for tests and benchmarks)."""
