"""Transformer shapes and the parameter counts that follow from them.

A `ModelConfig` holds the handful of numbers a Hugging Face ``config.json``
carries (layers, hidden size, heads, kv heads, vocabulary, intermediate size)
plus the few architectural switches that change the count (gated MLP, tied
embeddings, biases, experts). The presets are typed in by hand from each
model's published ``config.json``; tests check that the counts they give equal
the parameter counts the model publishers state, so the formulas below are
checked, not assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from loopstack.core.errors import ConfigError, NotFoundError

Norm = Literal["rmsnorm", "layernorm"]


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a decoder (or encoder) transformer.

    Parameters
    ----------
    layers, hidden, heads, vocab, intermediate
        ``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``,
        ``vocab_size`` and ``intermediate_size`` of the model's config.
    kv_heads
        ``num_key_value_heads``; fewer than `heads` is grouped-query attention
        (Ainslie et al. 2023). Defaults to `heads`.
    head_dim
        Width of one head; defaults to ``hidden // heads``.
    gated_mlp
        SwiGLU-style MLP with gate, up and down matrices (Llama, Mistral);
        False is the two-matrix GELU MLP of GPT-2, GPT-3 and BERT.
    tied_embeddings
        The output projection reuses the input embedding matrix.
    position_embeddings
        Rows of a learned absolute position table (GPT-2, BERT); 0 for RoPE.
    linear_bias, qkv_bias
        Every linear layer has a bias (GPT-2, BERT, OPT), or only the q/k/v
        projections do (Qwen2).
    experts, experts_per_token
        Mixture-of-experts MLP (Mixtral): `experts` MLPs per layer, a router,
        and `experts_per_token` of them active for each token.
    dropout
        Whether training applies dropout; it adds mask bytes to activations.
    extra_params
        Parameters outside the blocks the formula covers (BERT's pooler and
        token-type table), so presets add up to the published count.

    Examples
    --------
    >>> from loopstack.economics import get_model
    >>> get_model("llama-2-7b").parameters()
    6738415616
    """

    name: str
    layers: int
    hidden: int
    heads: int
    vocab: int
    intermediate: int
    kv_heads: int | None = None
    head_dim: int | None = None
    max_context: int = 2048
    gated_mlp: bool = True
    tied_embeddings: bool = False
    position_embeddings: int = 0
    norm: Norm = "rmsnorm"
    linear_bias: bool = False
    qkv_bias: bool = False
    experts: int = 1
    experts_per_token: int = 1
    dropout: bool = False
    extra_params: int = 0
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for key in ("layers", "hidden", "heads", "vocab", "intermediate", "experts", "experts_per_token"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model {self.name!r}: {key}={value!r} must be a positive integer")
        for key in ("kv_heads", "head_dim"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"model {self.name!r}: {key}={value!r} must be a positive integer or None")
        if self.head_dim is None and self.hidden % self.heads:
            raise ConfigError(
                f"model {self.name!r}: hidden={self.hidden} is not divisible by heads={self.heads}; pass head_dim"
            )
        if self.heads % self.kv:
            raise ConfigError(f"model {self.name!r}: heads={self.heads} must be a multiple of kv_heads={self.kv}")

    # -- derived shapes ---------------------------------------------------------------
    @property
    def kv(self) -> int:
        """Key/value heads (equal to `heads` without grouped-query attention)."""
        return self.kv_heads or self.heads

    @property
    def dim(self) -> int:
        """Width of one attention head."""
        return self.head_dim or self.hidden // self.heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one block, keyed by its short name.

        The MLP matrices are per expert; `parameters` multiplies by `experts`.
        """
        h, q_out, kv_out = self.hidden, self.heads * self.dim, self.kv * self.dim
        shapes = {"q": (h, q_out), "k": (h, kv_out), "v": (h, kv_out), "o": (q_out, h)}
        if self.gated_mlp:
            shapes["gate"] = (h, self.intermediate)
        shapes["up"] = (h, self.intermediate)
        shapes["down"] = (self.intermediate, h)
        return shapes

    # -- parameter counts ---------------------------------------------------------------
    def breakdown(self) -> dict[str, int]:
        """Parameters by part: embeddings, attention, mlp, norms, lm_head, extra."""
        shapes = self.linear_shapes()
        attention = sum(i * o for name, (i, o) in shapes.items() if name in "qkvo")
        if self.linear_bias:
            attention += sum(o for name, (_, o) in shapes.items() if name in "qkvo")
        elif self.qkv_bias:
            attention += sum(o for name, (_, o) in shapes.items() if name in "qkv")
        expert = sum(i * o + (o if self.linear_bias else 0) for name, (i, o) in shapes.items() if name not in "qkvo")
        router = self.hidden * self.experts if self.experts > 1 else 0
        per_norm = self.hidden * (2 if self.norm == "layernorm" else 1)
        return {
            "embeddings": self.vocab * self.hidden + self.position_embeddings * self.hidden,
            "attention": self.layers * attention,
            "mlp": self.layers * (expert * self.experts + router),
            "norms": (2 * self.layers + 1) * per_norm,
            "lm_head": 0 if self.tied_embeddings else self.vocab * self.hidden,
            "extra": self.extra_params,
        }

    def parameters(self) -> int:
        """Total parameter count, as ``sum(p.numel() for p in model.parameters())`` gives it."""
        return sum(self.breakdown().values())

    def active_parameters(self) -> int:
        """Parameters one token passes through: all of them, except unused experts of a MoE."""
        if self.experts == 1:
            return self.parameters()
        parts = self.breakdown()
        router = self.hidden * self.experts
        per_expert = (parts["mlp"] - self.layers * router) // self.experts
        return self.parameters() - per_expert * (self.experts - self.experts_per_token)

    def block_linear_parameters(self) -> int:
        """Weights of the blocks' linear layers: what bitsandbytes quantizes to 4 bit for QLoRA.

        Embeddings, the output head, norms and biases stay in 16 bit.
        """
        shapes = self.linear_shapes()
        per_layer = sum(i * o * (self.experts if name not in "qkvo" else 1) for name, (i, o) in shapes.items())
        return self.layers * per_layer

    def largest_layer(self) -> int:
        """Parameters of the largest single module: the embedding table or one block.

        `accelerate estimate-memory` reports this as the minimum memory to load
        a model layer by layer (``device_map="auto"``).
        """
        parts = self.breakdown()
        per_norm = self.hidden * (2 if self.norm == "layernorm" else 1)
        block = (parts["attention"] + parts["mlp"]) // self.layers + 2 * per_norm
        return max(self.vocab * self.hidden, block)

    def kv_cache_bytes_per_token(self, bytes_per_value: float = 2) -> float:
        """Bytes of key and value cache one token adds: 2 * layers * kv_heads * head_dim * bytes.

        Kwon et al. 2023 (vLLM, section 3) give 800 KB per token for OPT-13B
        in fp16; grouped-query attention divides it by ``heads / kv_heads``.
        """
        return 2 * self.layers * self.kv * self.dim * bytes_per_value

    def kv_share(self, tensor_parallel: int) -> float:
        """The share of the KV cache each of `tensor_parallel` GPUs holds.

        The KV heads split evenly; when there are fewer KV heads than GPUs (grouped-query
        attention), each GPU keeps a whole head, replicated, as vLLM does. `tensor_parallel` is one
        `check_tensor_parallel` accepts.

        Examples
        --------
        >>> from loopstack.economics import get_model
        >>> llama3 = get_model("llama-3-8b")   # 8 KV heads
        >>> llama3.kv_share(2), llama3.kv_share(16)
        (0.5, 0.125)
        """
        return -(-self.kv // tensor_parallel) / self.kv

    def check_tensor_parallel(self, tensor_parallel: int) -> None:
        """Refuse a tensor-parallel size that does not split the attention heads evenly (Megatron-LM's rule)."""
        if tensor_parallel < 1:
            raise ConfigError(f"tensor_parallel={tensor_parallel} must be at least 1")
        if self.heads % tensor_parallel:
            divisors = [d for d in range(1, self.heads + 1) if self.heads % d == 0]
            raise ConfigError(f"tensor_parallel={tensor_parallel} does not divide {self.name}'s {self.heads} attention "
                              f"heads; use one of {divisors}")

    def with_(self, **changes: object) -> ModelConfig:
        """A copy with some fields changed, e.g. a longer context."""
        return replace(self, **changes)  # type: ignore[arg-type]


_GATED_TYPES = {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "phi3", "gemma", "gemma2"}


def from_hf_config(config: dict[str, object], name: str | None = None) -> ModelConfig:
    """A `ModelConfig` from a Hugging Face ``config.json`` mapping (Llama-, GPT-2- or BERT-style keys).

    Examples
    --------
    >>> cfg = {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096,
    ...        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    ...        "intermediate_size": 14336, "max_position_embeddings": 8192}
    >>> from_hf_config(cfg).parameters() == get_model("llama-3-8b").parameters()
    True
    """

    if not isinstance(config, dict):
        raise ConfigError(f"a model config must be a JSON object of config.json keys, not {type(config).__name__}")

    def pick(*keys: str, default: int | None = None) -> int:
        for key in keys:
            if config.get(key) is not None:
                return _whole(config[key], key)
        if default is None:
            raise ConfigError(f"model config has none of {keys}; is it a transformer config.json?")
        return default

    def optional(key: str) -> int | None:
        return None if config.get(key) is None else _whole(config[key], key)

    kind = str(config.get("model_type", ""))
    hidden = pick("hidden_size", "n_embd", "d_model")
    learned_positions = kind in {"gpt2", "bert", "roberta", "opt", "gpt_neo"}
    context = pick("max_position_embeddings", "n_positions", "n_ctx", default=2048)
    # BERT-style encoders: the pooler and the token-type table are weights outside the transformer blocks
    encoder_extra = hidden * hidden + hidden + pick("type_vocab_size", default=2) * hidden if kind in _ENCODERS else 0
    return ModelConfig(
        name=name or str(config.get("_name_or_path") or kind or "custom"),
        layers=pick("num_hidden_layers", "n_layer", "num_layers"),
        hidden=hidden,
        heads=pick("num_attention_heads", "n_head"),
        kv_heads=optional("num_key_value_heads"),
        head_dim=optional("head_dim"),
        vocab=pick("vocab_size"),
        intermediate=pick("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden),
        max_context=context,
        gated_mlp=kind in _GATED_TYPES,
        tied_embeddings=bool(config.get("tie_word_embeddings", kind not in _GATED_TYPES)),
        position_embeddings=context if learned_positions else 0,
        norm="rmsnorm" if kind in _GATED_TYPES else "layernorm",
        linear_bias=kind not in _GATED_TYPES,
        qkv_bias=kind.startswith("qwen2"),
        experts=optional("num_local_experts") or 1,
        experts_per_token=optional("num_experts_per_tok") or 1,
        dropout=_trains_with_dropout(config),
        extra_params=encoder_extra,
        source="config.json",
    )


_ENCODERS = {"bert", "roberta"}
# the keys config.json files name their dropout probabilities by (GPT-2, BERT, OPT, Llama, ...)
_DROPOUT_KEYS = (
    "attn_pdrop", "resid_pdrop", "embd_pdrop", "hidden_dropout_prob", "attention_probs_dropout_prob", "dropout",
    "attention_dropout", "activation_dropout", "hidden_dropout",
)  # fmt: skip


def _trains_with_dropout(config: dict[str, object]) -> bool:
    """Any dropout probability above 0: training then stores a mask per dropout, which counts in activations."""
    for key in _DROPOUT_KEYS:
        value = config.get(key)
        if isinstance(value, bool) or value is None:
            continue
        if not isinstance(value, int | float) or not 0 <= value < 1:
            raise ConfigError(f"model config {key}={value!r} is not a dropout probability; use a number in [0, 1)")
        if value > 0:
            return True
    return False


def _whole(value: object, key: str) -> int:
    """A config.json count as an int: 32 or "32" or 32.0, but not "big" or 2.5 (int() would cut it to 2)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not number.is_integer():
        raise ConfigError(f"model config {key}={value!r} must be a whole number")
    return int(number)


def _hf(url: str) -> str:
    return f"config.json of {url}"


PRESETS: dict[str, ModelConfig] = {
    m.name: m
    for m in [
        ModelConfig(
            "gpt2", layers=12, hidden=768, heads=12, vocab=50257, intermediate=3072, max_context=1024,
            gated_mlp=False, tied_embeddings=True, position_embeddings=1024, norm="layernorm",
            linear_bias=True, dropout=True, source=_hf("openai-community/gpt2"),
        ),
        ModelConfig(
            "bert-base-cased", layers=12, hidden=768, heads=12, vocab=28996, intermediate=3072, max_context=512,
            gated_mlp=False, tied_embeddings=True, position_embeddings=512, norm="layernorm", linear_bias=True,
            dropout=True, extra_params=768 * 768 + 768 + 2 * 768,
            source=_hf("google-bert/bert-base-cased") + "; pooler, token types and embedding LayerNorm as extra",
        ),
        ModelConfig(
            "gpt3-175b", layers=96, hidden=12288, heads=96, vocab=50257, intermediate=4 * 12288,
            max_context=2048, gated_mlp=False, tied_embeddings=True, position_embeddings=2048,
            norm="layernorm", linear_bias=True, dropout=True, source="Brown et al. 2020, Table 2.1",
        ),
        ModelConfig(
            "opt-13b", layers=40, hidden=5120, heads=40, vocab=50272, intermediate=20480, max_context=2048,
            gated_mlp=False, tied_embeddings=True, position_embeddings=2050, norm="layernorm",
            linear_bias=True, dropout=True, source=_hf("facebook/opt-13b"),
        ),
        ModelConfig(
            "llama-65b", layers=80, hidden=8192, heads=64, vocab=32000, intermediate=22016,
            source="Touvron et al. 2023 (LLaMA), Table 2",
        ),
        ModelConfig(
            "llama-2-7b", layers=32, hidden=4096, heads=32, vocab=32000, intermediate=11008, max_context=4096,
            source=_hf("meta-llama/Llama-2-7b-hf"),
        ),
        ModelConfig(
            "llama-2-13b", layers=40, hidden=5120, heads=40, vocab=32000, intermediate=13824, max_context=4096,
            source=_hf("meta-llama/Llama-2-13b-hf"),
        ),
        ModelConfig(
            "llama-2-70b", layers=80, hidden=8192, heads=64, kv_heads=8, vocab=32000, intermediate=28672,
            max_context=4096, source=_hf("meta-llama/Llama-2-70b-hf"),
        ),
        ModelConfig(
            "llama-3-8b", layers=32, hidden=4096, heads=32, kv_heads=8, vocab=128256, intermediate=14336,
            max_context=8192, source=_hf("meta-llama/Meta-Llama-3-8B"),
        ),
        ModelConfig(
            "llama-3-70b", layers=80, hidden=8192, heads=64, kv_heads=8, vocab=128256, intermediate=28672,
            max_context=8192, source=_hf("meta-llama/Meta-Llama-3-70B"),
        ),
        ModelConfig(
            "mistral-7b", layers=32, hidden=4096, heads=32, kv_heads=8, vocab=32000, intermediate=14336,
            max_context=32768, source=_hf("mistralai/Mistral-7B-v0.1"),
        ),
        ModelConfig(
            "mixtral-8x7b", layers=32, hidden=4096, heads=32, kv_heads=8, vocab=32000, intermediate=14336,
            max_context=32768, experts=8, experts_per_token=2, source=_hf("mistralai/Mixtral-8x7B-v0.1"),
        ),
        ModelConfig(
            "qwen2-7b", layers=28, hidden=3584, heads=28, kv_heads=4, vocab=152064, intermediate=18944,
            max_context=32768, qkv_bias=True, source=_hf("Qwen/Qwen2-7B"),
        ),
        ModelConfig(
            "phi-3-mini", layers=32, hidden=3072, heads=32, vocab=32064, intermediate=8192, max_context=4096,
            source=_hf("microsoft/Phi-3-mini-4k-instruct"),
        ),
    ]
}


def get_model(name: str | ModelConfig) -> ModelConfig:
    """A preset by name (case-insensitive), or the config itself when one is passed.

    Examples
    --------
    >>> get_model("Mixtral-8x7B").experts
    8
    """
    if isinstance(name, ModelConfig):
        return name
    preset = PRESETS.get(name.lower())
    if preset is None:
        raise NotFoundError(
            f"no model preset {name!r}; choose one of {', '.join(sorted(PRESETS))} or build a ModelConfig(...)"
        )
    return preset
