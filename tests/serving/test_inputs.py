"""InputSchema: a request's rows are checked field by field, and every refusal names the field as it was sent."""

from __future__ import annotations

import numpy as np
import pytest

from loopstack.core.errors import SignatureError
from loopstack.serving.inputs import Column, InputSchema

MIXED = InputSchema((Column("a", np.dtype("float64")), Column("s", np.dtype(object))))


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: MIXED.from_instances([{"a": 1, "s": {"k": 1}}]), "instances[0] field 's' must be a string"),
        (
            lambda: MIXED.from_instances([{"a": 1, "s": "u"}, {"a": 2, "s": 7}]),
            "instances[1] field 's' must be a string",
        ),
        (lambda: MIXED.from_instances([[1, "u"], [2, True]]), "instances[1] field 's' must be a string"),
        (lambda: MIXED.from_columns({"a": [1, 2], "s": ["u", 7]}), "inputs.s[1] must be a string"),
        (lambda: MIXED.from_columns({"a": [1, 2], "s": ["u", {"k": 1}]}), "inputs.s[1] must be a string"),
        (lambda: MIXED.from_columns({"a": [1, 2], "s": ["u", ["v", "w"]]}), "inputs.s[1] must be a string"),
    ],
)
def test_a_string_field_refuses_anything_but_strings_naming_the_row(make, needle: str) -> None:
    """A dict reached the model (a 500) and the prediction log; a number among strings became a string (a 200)."""
    with pytest.raises(SignatureError, match="must be a string") as error:
        make()
    assert needle in str(error.value)


def test_a_string_field_keeps_strings_and_nulls() -> None:
    rows = MIXED.from_instances([{"a": 1, "s": "u"}, {"a": 2, "s": None}])
    assert rows["s"].tolist() == ["u", None] and rows["a"].tolist() == [1.0, 2.0]
    columns = MIXED.from_columns({"a": [1.0], "s": [["u"]]})
    assert columns["s"].tolist() == ["u"]


def test_a_numeric_field_of_an_instances_request_is_named_as_sent() -> None:
    with pytest.raises(SignatureError, match="instances field 'a' must hold numbers"):
        MIXED.from_instances([{"a": "x", "s": "u"}])
