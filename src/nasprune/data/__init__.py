"""Task data for every stage: presets of the GLUE tasks (``presets``), reading local files
or the hub (``io``), checking them (``checks``), holding out the search split (``split``),
assembling a task's three splits (``tasks``) and tokenising with a disk cache and dynamic
padding (``encode``). Nothing here imports torch at import time."""
