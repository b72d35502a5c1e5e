"""The on-disk format of an export: its file names, the manifest's format and layouts.

Plain constants, importable without torch (the CLI reads them for its help). Exported
directories and every reader of them depend on these exact values.
"""

FORMAT = "nasprune-export"
#: 1: every export needs the remote-code class; 2: ``layout`` (vanilla or remote), model card.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
SUBNET_FILE = "subnet.json"
METRICS_FILE = "metrics.json"
RECOVERY_FILE = "recovery.json"
REMOTE_FILE = "modeling_nasprune.py"
CARD_FILE = "README.md"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
#: ``manifest.json`` ``layout``: a stock transformers config, or nasprune's remote-code class.
LAYOUTS = ("vanilla", "remote")
#: ``export_model(layout=...)``: vanilla when possible, always vanilla (or fail), remote code.
LAYOUT_CHOICES = ("auto", *LAYOUTS)
#: ``--quantize`` values (``manifest.json`` ``quantize``: one of these or null).
QUANTIZE = ("int8",)
#: Files that must be listed in every manifest.
REQUIRED = (CONFIG, WEIGHTS, SUBNET_FILE)
#: Unlisted files accepted in an export (reports that no loader reads).
TOLERATED = frozenset({RECOVERY_FILE})
#: Files only nasprune writes: a directory holding any of them is treated as an export.
MARKERS = (MANIFEST, SUBNET_FILE, METRICS_FILE, REMOTE_FILE, RECOVERY_FILE)
