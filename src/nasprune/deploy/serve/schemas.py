"""The JSON bodies of ``POST /v1/predict`` and of the Hugging Face-compatible ``POST /``,
as pydantic models built per app so that the configured limits (inputs per request,
characters per text) are part of the schema."""

# No `from __future__ import annotations`: pydantic resolves these models' annotations
# (``list[Prediction]`` names a class local to ``request_models``) when they are built.

from typing import Annotated

from nasprune.deploy.serve.predictor import Item


def request_models(max_items: int, max_chars: int):
    """Pydantic models with the configured limits baked in (violations are 422)."""
    from pydantic import BaseModel, ConfigDict, Field, model_validator

    class PredictRequest(BaseModel):
        """Exactly one of ``text`` (optionally with ``text_pair``), ``texts`` or ``inputs``.

        ``texts`` items are strings or two-element ``[text, text_pair]`` lists. ``inputs``
        (the convention of Hugging Face inference servers) is a string, or a list like
        ``texts``.
        """

        model_config = ConfigDict(extra="forbid")
        text: str | None = Field(default=None, min_length=1, max_length=max_chars)
        text_pair: str | None = Field(default=None, min_length=1, max_length=max_chars)
        texts: list[str | tuple[str, str]] | None = Field(
            default=None, min_length=1, max_length=max_items)
        inputs: str | list[str | tuple[str, str]] | None = None

        @model_validator(mode="after")
        def _one_form(self):
            given = [name for name in ("text", "texts", "inputs")
                     if getattr(self, name) is not None]
            if len(given) != 1:
                raise ValueError("give exactly one of 'text', 'texts' or 'inputs'")
            if self.text_pair is not None and self.text is None:
                raise ValueError("'text_pair' goes with 'text'")
            name = given[0]
            entries = getattr(self, name)
            if isinstance(entries, str):
                entries = [entries]
            if not entries:
                raise ValueError(f"{name}: give at least one input")
            if len(entries) > max_items:
                raise ValueError(f"{name}: at most {max_items} inputs per request")
            for i, entry in enumerate(entries):
                for part in (entry,) if isinstance(entry, str) else entry:
                    if not 1 <= len(part) <= max_chars:
                        raise ValueError(f"{name}[{i}]: each text must have 1 to "
                                         f"{max_chars} characters")
            return self

        def items(self) -> list[Item]:
            if self.text is not None:
                return [(self.text, self.text_pair)]
            entries = self.texts if self.texts is not None else self.inputs
            if isinstance(entries, str):
                return [(entries, None)]
            return [(t, None) if isinstance(t, str) else (t[0], t[1]) for t in entries]

    class Prediction(BaseModel):
        label: int | None
        label_name: str | None
        scores: dict[str, float]
        value: float | None = None

    class PredictResponse(BaseModel):
        predictions: list[Prediction]

    return PredictRequest, PredictResponse


def hf_request_model(max_items: int, max_chars: int):
    """The body ``huggingface_hub.InferenceClient.text_classification`` sends:
    ``{"inputs": text or [texts], "parameters": {"top_k", "function_to_apply",
    "truncation"}}`` (unknown parameters are 422, as for ``/v1/predict``), and the
    ``options`` older clients add (``wait_for_model``, ``use_cache``): accepted and ignored,
    the model here is always loaded and nothing is cached."""
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    text = Field(min_length=1, max_length=max_chars)

    class Parameters(BaseModel):
        model_config = ConfigDict(extra="forbid")
        top_k: int | None = Field(default=None, ge=1)
        function_to_apply: Literal["softmax", "sigmoid", "none"] | None = None
        truncation: bool | None = None  # None/True: cut to --max-length tokens

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        wait_for_model: bool | None = None
        use_cache: bool | None = None

    class TextClassificationRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        inputs: Annotated[str, text] | Annotated[list[Annotated[str, text]], Field(
            min_length=1, max_length=max_items)]
        parameters: Parameters = Field(default_factory=Parameters)
        options: Options = Field(default_factory=Options)

        def texts(self) -> list[str]:
            return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)

    return TextClassificationRequest


def hf_answer(result: dict, labels: list[str], function: str | None,
              top_k: int | None) -> list[dict]:
    """One input's ``[{"label", "score"}, ...]``, best first, as transformers' pipeline
    computes it: ``softmax`` (the default; ``sigmoid`` for one output), ``sigmoid`` or
    ``none`` (the raw logits)."""
    import math

    logits = result["logits"]
    function = function or ("sigmoid" if len(logits) == 1 else "softmax")
    if function == "softmax":
        peak = max(logits)
        exps = [math.exp(x - peak) for x in logits]
        scores = [e / sum(exps) for e in exps]
    elif function == "sigmoid":
        scores = [1 / (1 + math.exp(-x)) for x in logits]
    else:
        scores = list(logits)
    ranked = sorted(zip(labels, scores), key=lambda pair: -pair[1])
    return [{"label": label, "score": float(score)} for label, score in ranked[:top_k]]
