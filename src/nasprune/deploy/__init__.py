"""After the search: the pick as a physically smaller model that standard tools load
(``export``), served over HTTP with dynamic batching (``serve``) and load-tested with
Locust (``loadtest``). It reads no run directory and imports no search code."""
