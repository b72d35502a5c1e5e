"""The PyTorch backend: the Hugging Face files every export has, run by transformers.

The weights are ``model.safetensors`` (never pickle) and the model is built from the
classes of transformers (vanilla layout) or of ``modeling_nasprune`` (remote layout), so
no code from the directory runs. It is float only: int8 is ONNX Runtime's static
quantization (``backends/onnx.py``). PyTorch's dynamic int8 (``torch.ao.quantization``,
deprecated) computed activation scales per call, so an answer depended on the other texts
of its batch; exports made with it load in float or are re-exported.
"""

from __future__ import annotations

from pathlib import Path

from nasprune.deploy.export.backends.base import Backend, Written
from nasprune.deploy.export.format import WEIGHTS
from nasprune.errors import NaspruneError

#: Why the PyTorch backend has no int8 (the message of every refusal).
NO_INT8 = ("int8 runs on ONNX Runtime (static, batch-independent quantization): load with "
           "backend='onnx' (pip install 'nasprune[onnx]'), or quantized=False for float")


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

    def load(self, directory: Path, manifest: dict, config, layout: str, state: dict,
             quantized: bool, threads: int | None, device="cpu"):
        if quantized:
            old = "torch_int8" in manifest.get("backends", {})
            raise NaspruneError(f"{directory}: " + (
                "its int8 was PyTorch dynamic quantization, whose answers depended on the "
                "batch; load it with quantized=False, or re-export with --quantize int8"
                if old else NO_INT8))
        try:
            model = _build(config, layout)
            model.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise NaspruneError(f"{directory}: weights do not fit the config: "
                                f"{str(exc).splitlines()[0]}") from exc
        return model.to(device).eval()


BACKEND = TorchBackend()
