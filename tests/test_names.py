"""Names that reach URLs, SQL identifiers and Redis keys: a trailing newline is not part of any of them."""

from __future__ import annotations

import pytest

from loopstack.core.errors import ConfigError, ValidationError
from loopstack.features.definitions import check_name
from loopstack.rollout.deployment import Deployment, check
from loopstack.serving.config import ModelSpec


def _endpoint(name: str) -> None:
    check(Deployment(endpoint=name, strategy="single", variants={"a": "fraud/1"}, champion="a", weights={"a": 1.0}))


@pytest.mark.parametrize(
    ("make", "valid", "refusal"),
    [
        (lambda name: check_name("feature view", name), "card_stats", ValidationError),
        (_endpoint, "fraud", ValidationError),
        (lambda name: ModelSpec(name=name, ref="fraud/1"), "fraud", ConfigError),
    ],
)
def test_a_name_ending_in_a_newline_is_refused(make, valid: str, refusal: type[Exception]) -> None:
    make(valid)  # "$" also matches just before a final newline: "fraud\n" passed these checks
    with pytest.raises(refusal, match=r"fraud|card_stats"):
        make(valid + "\n")
