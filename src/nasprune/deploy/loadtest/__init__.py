"""Load testing (``nasprune loadtest``, extra ``[loadtest]``): served endpoints under
stepped numbers of Locust users, each step summarised (requests/s, latency percentiles,
failures by status) and plotted, and the saturation point found. ``config`` parses the
targets, steps and inputs, ``runner`` drives Locust (``locustfile.py``, run by path in
its own process), ``stats`` summarises, ``plots`` draws."""
