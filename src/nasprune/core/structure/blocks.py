"""What one encoder layer costs, by the shape of its blocks: each ``Layout`` names its
``Block``, so a family with another block shape (no biases, a gated FFN) states its own
parameter and FLOP formulas. Plain Python (``core.subnet`` reads it without torch);
shipped with exports.
"""

from __future__ import annotations


class Block:
    """A post-LayerNorm layer with biases everywhere (the BERT family): q/k/v and the
    attention output, a two-matrix FFN, one LayerNorm after each block."""

    def params(self, heads: int, units: int, head_dim: int, hidden: int) -> int:
        """Exact parameter count of one layer keeping ``heads`` heads and ``units`` units."""
        attn = 0
        if heads:
            inner = heads * head_dim
            attn = 3 * (hidden * inner + inner) + inner * hidden + hidden + 2 * hidden
        ffn = 0
        if units:
            ffn = hidden * units + units + units * hidden + hidden + 2 * hidden
        return attn + ffn

    def flops(self, heads: int, units: int, head_dim: int, hidden: int, seq_len: int) -> int:
        """Multiply-accumulates x 2 of one layer for one sequence (LayerNorm/softmax
        ignored)."""
        total, s = 0, seq_len
        if heads:
            inner = heads * head_dim
            total += 2 * s * hidden * 3 * inner  # q, k, v projections
            total += 2 * 2 * s * s * inner  # scores and weighted sum
            total += 2 * s * inner * hidden  # attention output
        if units:
            total += 2 * 2 * s * hidden * units  # FFN in and out
        return total


#: Every family nasprune supports today has this block shape.
POST_NORM = Block()
