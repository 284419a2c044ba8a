"""A small decoder transformer built from an economics `ModelConfig`, with no download.

It exists for tests, benchmarks and examples: its parameter count equals what
`ModelConfig.parameters()` predicts (the estimator checked against a real
module), it supports grouped-query attention, gated or GELU MLPs, RMSNorm or
LayerNorm, tied embeddings and dropout, and its blocks live in an
``nn.ModuleList`` so gradient checkpointing and FSDP find them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from loopstack.economics import ModelConfig


def _norm(config: ModelConfig) -> nn.Module:
    if config.norm == "layernorm":
        return nn.LayerNorm(config.hidden)
    return nn.RMSNorm(config.hidden, eps=1e-6)


class Block(nn.Module):
    """Pre-norm attention and MLP with residual connections."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c, bias = config, config.linear_bias
        self.heads, self.kv, self.dim = c.heads, c.kv, c.dim
        self.dropout = 0.1 if c.dropout else 0.0
        self.norm1, self.norm2 = _norm(c), _norm(c)
        qkv_bias = bias or c.qkv_bias
        self.q = nn.Linear(c.hidden, c.heads * c.dim, bias=qkv_bias)
        self.k = nn.Linear(c.hidden, c.kv * c.dim, bias=qkv_bias)
        self.v = nn.Linear(c.hidden, c.kv * c.dim, bias=qkv_bias)
        self.o = nn.Linear(c.heads * c.dim, c.hidden, bias=bias)
        self.gate = nn.Linear(c.hidden, c.intermediate, bias=bias) if c.gated_mlp else None
        self.up = nn.Linear(c.hidden, c.intermediate, bias=bias)
        self.down = nn.Linear(c.intermediate, c.hidden, bias=bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.heads, self.dim).transpose(1, 2)
        k = self.k(x).view(b, s, self.kv, self.dim).transpose(1, 2)
        v = self.v(x).view(b, s, self.kv, self.dim).transpose(1, 2)
        if self.kv != self.heads:  # grouped-query attention: share each KV head across its group
            k = k.repeat_interleave(self.heads // self.kv, dim=1)
            v = v.repeat_interleave(self.heads // self.kv, dim=1)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        return self.o(out.transpose(1, 2).reshape(b, s, self.heads * self.dim))

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            return self.down(F.silu(self.gate(x)) * self.up(x))
        return self.down(F.gelu(self.up(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + F.dropout(self.attention(self.norm1(x)), self.dropout, self.training)
        return x + F.dropout(self.mlp(self.norm2(x)), self.dropout, self.training)


class TinyTransformer(nn.Module):
    """A causal language model of the shape `config` describes.

    Examples
    --------
    >>> from loopstack.economics import ModelConfig
    >>> cfg = ModelConfig("tiny", layers=2, hidden=32, heads=4, kv_heads=2, vocab=100, intermediate=64)
    >>> model = TinyTransformer(cfg)
    >>> sum(p.numel() for p in model.parameters()) == cfg.parameters()
    True
    >>> model(torch.zeros(3, 5, dtype=torch.long)).shape
    torch.Size([3, 5, 100])
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.hidden)
        self.positions = nn.Embedding(config.position_embeddings, config.hidden) if config.position_embeddings else None
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = _norm(config)
        self.head = None if config.tied_embeddings else nn.Linear(config.hidden, config.vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        if self.positions is not None:
            x = x + self.positions(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x @ self.embed.weight.T if self.head is None else self.head(x)


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Next-token cross-entropy over a batch whose first tensor is token ids."""
    tokens = batch[0]
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1))
