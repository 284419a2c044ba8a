"""Shared helpers for the training tests: a tiny language-model task and weight comparison."""

from __future__ import annotations

from importlib.util import find_spec

import pytest

# Without the torch extra the training tests are not collected (each also calls importorskip).
collect_ignore_glob = [] if find_spec("torch") is not None else ["test_*.py"]
torch = pytest.importorskip("torch") if not collect_ignore_glob else None

from loopstack.economics import ModelConfig  # noqa: E402

TINY = ModelConfig("tiny", layers=2, hidden=32, heads=4, kv_heads=2, vocab=64, intermediate=64, dropout=True,
                   max_context=16)


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """One intra-op thread: on a shared 2-core machine OpenMP's spinning threads make steps 15x slower,
    and the thread count is part of what makes CPU results bit-identical."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tokens(n: int = 64, seq: int = 12, seed: int = 0) -> torch.Tensor:
    """Synthetic token sequences with structure a model can learn (counting modulo the vocabulary)."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, TINY.vocab, (n, 1), generator=g)
    return (start + torch.arange(seq)) % TINY.vocab


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in getattr(model, "module", model).state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Bit-for-bit equality of two state dicts."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
