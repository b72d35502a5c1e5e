"""The names of the extension points whose implementations need torch, importable without it.

The CLI and ``config`` check a command against these names before any work starts. Each
registry module takes its names from here (or, for classes, is checked against them by
``tests/test_choices.py``), so a name lives in one place.
"""

#: Fine-tuning strategies (``training.STRATEGIES``; ``distill`` runs after a standard
#: fine-tuning, with its model as the fixed teacher).
STRATEGIES = ("standard", "sandwich", "sandwich-kd", "random-linear", "distill")
#: Importance scores for reordering heads and units (``supernet``).
IMPORTANCE = ("fisher", "taylor", "magnitude")
#: Recovery of the pick before export (``recovery``).
RECOVERY = ("distill", "least-squares", "both", "none")
#: Export formats and quantization modes (``export``).
FORMATS = ("hf", "onnx")
QUANTIZE = ("int8",)
#: Cost objectives next to ``error``.
COSTS = ("params", "encoder_params", "flops", "latency")
