"""What the tests and the benchmarks share (``benchmarks/reliability`` imports it as
``tests.cases``, the tests as ``cases``): the shared data's place, tiny random models that
build in milliseconds, and the case tables in ``cli.py`` (user mistakes) and ``tamper.py``
(damaged exports). Nothing here imports a test module or ``conftest``."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data" / "glue"

WORDS = ("the a an is was it this that movie film good bad great awful not very and but of to "
         "in fun boring best worst love hate story acting plot").split()


def tiny_tokenizer():
    """A real WordPiece tokenizer over a few dozen words (unknown words map to [UNK])."""
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz"]
    return BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})


def tiny_bert(num_labels: int = 2, layers: int = 2, heads: int = 4, hidden: int = 32,
              ffn: int = 64, seed: int = 0):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=64, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=ffn,
                        max_position_embeddings=64, num_labels=num_labels)
    return BertForSequenceClassification(config)


def metric(text: str, name: str) -> float:
    """The value of sample ``name`` (with its labels) in Prometheus text, 0 when absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
