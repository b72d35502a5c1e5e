"""The PyTorch backend: the Hugging Face files every export has, run by transformers.

The weights are ``model.safetensors`` (never pickle) and the model is built from the
classes of transformers (vanilla layout) or of ``modeling_nasprune`` (remote layout), so
no code from the directory runs. int8 is dynamic quantization of the ``nn.Linear`` layers
applied at load time: quantized PyTorch modules cannot be stored as safetensors.

It stays on ``torch.ao.quantization.quantize_dynamic``: torchao's
``Int8DynamicActivationInt8WeightConfig`` runs about 30x slower in eager mode on CPU
(measured with torch 2.13, torchao 0.18; docs/export.md). Its deprecation warnings are
silenced by their exact messages only.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

from nasprune.deploy.export.backends.base import Backend, Written
from nasprune.deploy.export.format import WEIGHTS
from nasprune.errors import NaspruneError


def quantize_torch(model):
    """PyTorch dynamic int8 quantization of the ``nn.Linear`` layers, per output channel
    (a new model; the argument is left as it is).

    Uses ``torch.ao.quantization.quantize_dynamic`` (deprecated, still in torch 2.13; its
    replacement torchao is ~30x slower for this in eager mode on CPU: docs/export.md). When
    a torch no longer has it, this says so instead of failing somewhere else."""
    import torch
    from torch import nn

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.*deprecated",
                                category=UserWarning)
        try:
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        except ImportError as exc:
            raise NaspruneError(
                f"PyTorch int8 needs torch.ao.quantization.quantize_dynamic, which torch "
                f"{torch.__version__} does not have; export with --format onnx --quantize "
                "int8 for ONNX Runtime int8") from exc
        return quantize_dynamic(copy.deepcopy(model).to("cpu").eval(),
                                {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def _build(config, layout: str):
    from transformers import AutoModelForSequenceClassification

    from nasprune.deploy.export.modeling_nasprune import CLASSES

    if layout == "vanilla":
        return AutoModelForSequenceClassification.from_config(config)
    return CLASSES[config.model_type](config)


class TorchBackend(Backend):
    name = "torch"
    label = "PyTorch model"

    def write(self, model, directory: Path, say) -> Written:
        """``config.json`` and ``model.safetensors`` (``save_pretrained``), nothing else."""
        model.save_pretrained(directory)
        leftovers = [p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pth")]
        if leftovers or not (directory / WEIGHTS).is_file():
            raise NaspruneError(f"unexpected weight files written: {leftovers or 'none'}")
        return Written({"torch": WEIGHTS}, lambda: model)

    def quantize(self, model, directory: Path, say) -> Written:
        int8 = quantize_torch(model)
        return Written({"torch_int8": f"{WEIGHTS} (dynamic quantization at load)"},
                       lambda: int8, {"int8_backend": "pytorch"})

    def load(self, directory: Path, manifest: dict, config, layout: str, state: dict,
             quantized: bool, threads: int | None):
        try:
            model = _build(config, layout)
            model.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise NaspruneError(f"{directory}: weights do not fit the config: "
                                f"{str(exc).splitlines()[0]}") from exc
        model.eval()
        if quantized:
            model = quantize_torch(model)
        return model


BACKEND = TorchBackend()
