"""Report: a run for people. Reads what the pipeline left in a run directory and turns it
into figures and tables: the Pareto plot and CSV of ``nasprune pareto``, and the one
self-contained HTML page of ``nasprune report``."""
