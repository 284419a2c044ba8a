"""LoRA fine-tuning through PEFT: add adapters, report the trainable share, save, load, merge, register.

LoRA (Hu et al. 2021) freezes the base weights W and trains a low-rank
update ``B @ A`` of rank r beside each targeted matrix, so a fine-tune
trains ``r * (d_in + d_out)`` parameters per matrix instead of
``d_in * d_out``. `apply_lora` wraps any module whose targeted layers are
``nn.Linear`` (a `TinyTransformer` built from an economics `ModelConfig`, or
a ``transformers`` model built from its config) and logs the trainable
count and share on the active run; for a `TinyTransformer` it also logs the
count `loopstack.economics.lora_parameters` predicts for that config, so the
planner's number is checked against the real module on every run.

`save_adapter` writes only the adapter (PEFT's ``adapter_config.json`` and
``adapter_model.safetensors``, kilobytes instead of the base model) and
tracks those files as artifacts of the active run; `load_adapter` puts them
back on a fresh base; `merge_adapter` folds ``B @ A`` into W so serving pays
no adapter cost; `register_merged` logs the merged model (python flavor, with
a `CausalLMPredictor` that returns next-token logits) and registers it as a
new model version. Needs the ``lora`` extra (``peft``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from loopstack.core.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from loopstack.registry.entities import ModelVersion

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class TrainableShare:
    """Trainable and total parameters of a model, and the economics prediction when there is one.

    Examples
    --------
    >>> round(TrainableShare(trainable=1792, total=92224).share, 5)
    0.01943
    """

    trainable: int
    total: int
    predicted: int | None = None

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        percent = 100 * self.share
        return f"trainable params: {self.trainable:,} || all params: {self.total:,} || trainable%: {percent:.4f}"


def trainable_share(model: torch.nn.Module, predicted: int | None = None) -> TrainableShare:
    """Count the parameters that require gradients, against all of them (as PEFT's report does).

    `predicted` defaults to what economics predicted when `apply_lora` wrapped the model.
    """
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return TrainableShare(trainable, sum(p.numel() for p in params), predicted or lora_predicted(model))


def _predicted(model: torch.nn.Module, rank: int, targets: Sequence[str]) -> int | None:
    """`lora_parameters` for a model that carries an economics `ModelConfig` (a `TinyTransformer`)."""
    from loopstack.economics import ModelConfig, lora_parameters

    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        return None
    return lora_parameters(config, rank, targets)


def _all_linear(model: torch.nn.Module) -> Sequence[str] | str:
    """Every linear layer but the output head: PEFT finds the head of a transformers model itself, but
    not of a `TinyTransformer`, whose layers its economics config names."""
    from loopstack.economics import ModelConfig

    config = getattr(model, "config", None)
    return list(config.linear_shapes()) if isinstance(config, ModelConfig) else "all-linear"


def apply_lora(
    model: torch.nn.Module,
    *,
    rank: int = 8,
    alpha: float | None = None,
    targets: Sequence[str] = ("q", "v"),
    dropout: float = 0.0,
) -> Any:
    """Wrap `model` with LoRA adapters of rank `rank` on the linear layers named `targets`.

    Everything but the adapters is frozen. `targets` are module-name suffixes
    (``q``, ``v``, ... on a `TinyTransformer`; ``q_proj``, ``v_proj`` on a
    Llama). `alpha` defaults to ``2 * rank`` (scaling alpha / r = 2). The
    rank, targets and the trainable count and share are logged on the active
    run. PEFT injects the adapters into `model` itself: build a fresh base to
    keep an unadapted copy.

    Examples
    --------
    >>> from loopstack.economics import ModelConfig
    >>> from loopstack.training import TinyTransformer
    >>> cfg = ModelConfig("tiny", layers=2, hidden=64, heads=4, kv_heads=2, vocab=128, intermediate=128)
    >>> peft_model = apply_lora(TinyTransformer(cfg), rank=4, targets=["q", "v"])
    >>> share = trainable_share(peft_model)
    >>> share.trainable, share.trainable == lora_predicted(peft_model)
    (1792, True)
    """
    from peft import LoraConfig, get_peft_model

    targets = [targets] if isinstance(targets, str) else list(targets)  # "q_proj" is one target, not 6 letters
    if rank < 1 or not targets:
        raise ConfigError(f"LoRA rank={rank!r} must be positive and targets={targets!r} non-empty, e.g. ['q']")
    predicted = _predicted(model, rank, targets)
    modules = _all_linear(model) if targets == ["all-linear"] else targets
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, target_modules=modules,
                        lora_dropout=dropout)
    try:
        wrapped = get_peft_model(model, config)
    except ValueError as exc:  # PEFT: "Target modules {...} not found in the base model"
        raise ConfigError(f"LoRA targets {targets!r} do not name linear layers of the model: {exc}") from exc
    wrapped.loopstack_lora = {"rank": rank, "targets": targets, "predicted": predicted}
    _log_share(trainable_share(wrapped, predicted), rank, targets)
    return wrapped


def lora_predicted(model: torch.nn.Module) -> int | None:
    """The trainable count economics predicted when `apply_lora` wrapped `model` (None for other models)."""
    info = getattr(model, "loopstack_lora", None)
    return None if info is None else info["predicted"]


def _log_share(share: TrainableShare, rank: int, targets: Sequence[str]) -> None:
    from loopstack.tracking.fluent import active_run

    run = active_run()
    if run is None:
        return
    run.log_params({"lora.rank": rank, "lora.targets": ",".join(targets)})
    metrics = {"lora.trainable_params": share.trainable, "lora.total_params": share.total,
               "lora.trainable_share": share.share}
    if share.predicted is not None:
        metrics["lora.predicted_trainable_params"] = share.predicted
    run.log_metrics(metrics)


def save_adapter(model: Any, directory: str | os.PathLike[str], *, artifact_path: str = "adapter") -> Path:
    """Write the adapter files (not the base) to `directory` and track them as artifacts of the active run."""
    from loopstack.tracking.fluent import active_run

    path = Path(directory)
    model.save_pretrained(path)
    run = active_run()
    if run is not None:
        for name in ADAPTER_FILES:
            run.log_artifact(path / name, artifact_path)
    return path


def load_adapter(base: torch.nn.Module, directory: str | os.PathLike[str], *, trainable: bool = False) -> Any:
    """Put the adapter saved in `directory` on `base` (a fresh model with the base weights)."""
    from peft import PeftModel

    path = Path(directory)
    missing = [name for name in ADAPTER_FILES if not (path / name).is_file()]
    if missing:
        raise NotFoundError(f"no LoRA adapter in {path}: {', '.join(missing)} missing; save one with save_adapter")
    return PeftModel.from_pretrained(base, path, is_trainable=trainable)


def merge_adapter(model: Any) -> torch.nn.Module:
    """Fold every adapter into its base weight (W + alpha/r * B @ A) and return the plain base module."""
    merged: torch.nn.Module = model.merge_and_unload()
    return merged.eval()


class CausalLMPredictor:
    """A language model as a registry model: token ids ``(n, seq)`` in, next-token logits ``(n, vocab)`` out.

    Examples
    --------
    >>> import numpy as np
    >>> from loopstack.economics import ModelConfig
    >>> from loopstack.training import TinyTransformer
    >>> cfg = ModelConfig("tiny", layers=1, hidden=16, heads=2, vocab=10, intermediate=32)
    >>> CausalLMPredictor(TinyTransformer(cfg)).predict(np.zeros((3, 4), dtype=np.int64)).shape
    (3, 10)
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()

    def predict(self, tokens: Any) -> Any:
        with torch.no_grad():
            out = self.model(torch.as_tensor(tokens, dtype=torch.long))
        logits = getattr(out, "logits", out)  # transformers models return an output object
        return logits[:, -1, :].float().numpy()


def register_merged(
    model: torch.nn.Module,
    name: str,
    *,
    example: Any,
    alias: str | None = None,
    artifact_path: str = "model",
    description: str = "LoRA adapter merged into its base",
) -> ModelVersion:
    """Log a merged model on the active run and register it as the next version of `name`."""
    from loopstack.registry.api import register_model
    from loopstack.tracking.fluent import active_run

    run = active_run()
    if run is None:
        raise ConfigError("register_merged needs an active run: call it inside `with loopstack.start_run():`")
    run.log_model(CausalLMPredictor(model), artifact_path, example=example, flavor="python")
    return register_model(run.id, artifact_path, name=name, alias=alias, description=description,
                          project=run.store.project)


__all__ = [
    "CausalLMPredictor",
    "TrainableShare",
    "apply_lora",
    "load_adapter",
    "lora_predicted",
    "merge_adapter",
    "register_merged",
    "save_adapter",
    "trainable_share",
]
