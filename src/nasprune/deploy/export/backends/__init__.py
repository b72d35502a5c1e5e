"""Export backends: the runtimes an export is written for and loaded with.

Every export holds the Hugging Face files (config, safetensors), which the ``torch``
backend writes and runs; each other backend adds its own files when ``--format`` names it,
and is chosen at load time by ``load(backend=...)`` or, with ``auto``, when the export has
its files and its runtime is installed. A backend (:class:`~.base.Backend`) owns its write
step, its int8 step and its runtime loader: adding one is one file here and one line below.
"""

from nasprune.registry import Registry

BACKENDS = Registry("export backend", {
    "torch": "nasprune.deploy.export.backends.pytorch:BACKEND",
    "onnx": "nasprune.deploy.export.backends.onnx:BACKEND",
})
#: The backend of the Hugging Face files that every export has (``--format hf``).
BASE = "torch"
#: ``--format`` values: ``hf`` (always written) and every other backend's name.
FORMATS = ("hf", *(name for name in BACKENDS if name != BASE))
#: ``load(backend=...)`` and ``NASPRUNE_BACKEND`` values: a backend, or ``auto``.
LOAD_BACKENDS = ("auto", *BACKENDS)
