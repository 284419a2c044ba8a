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


INTS = InputSchema((Column("n", np.dtype("int64")), Column("x", np.dtype("float64"))))
INTS_MIXED = InputSchema((Column("n", np.dtype("int64")), Column("on", np.dtype(bool)), Column("s", np.dtype(object))))
BAD_INTS = [(2.7, "must be a whole number"), (1e19, "must be within"), (2**70, "must be within"),
            (-1e30, "must be within"), (None, "must not be null")]


@pytest.mark.parametrize(("value", "problem"), BAD_INTS)
@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda v: INTS.from_instances([[1, 1.0], [v, 1.0]]), "instances[1] field 'n'"),
        (lambda v: INTS.from_columns({"n": [1, v], "x": [1.0, 2.0]}), "inputs.n[1]"),
        (lambda v: INTS_MIXED.from_instances([{"n": 1, "on": 1, "s": "u"}, {"n": v, "on": 0, "s": "u"}]),
         "instances[1] field 'n'"),
        (lambda v: INTS_MIXED.from_columns({"n": [1, v], "on": [True, False], "s": ["u", "v"]}), "inputs.n[1]"),
        (lambda v: _v2(INTS, [{"name": "input", "shape": [2, 2], "datatype": "FP64", "data": [1, 1.0, v, 1.0]}]),
         "input 'input'[1] field 'n'"),
        (lambda v: _v2(INTS, [{"name": "n", "shape": [2], "datatype": "FP64", "data": [1, v]},
                              {"name": "x", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]}]), "input 'n'[1]"),
    ],
    ids=["instances", "inputs", "instances-mixed", "inputs-mixed", "v2-matrix", "v2-fields"],
)
def test_an_integer_field_takes_only_whole_values_in_range_on_every_path(make, needle, value, problem) -> None:
    """2.7 became 2 and 1e19 INT64_MIN (a 200), and null a 500, where some field was a string or the request
    was v2: integer fields were only checked when every field was numeric, and never for range or null."""
    if needle.startswith("input "):  # a v2 FP64 tensor holds floats: NaN (as binary data sends it) for null
        value = float("nan") if value is None else float(value)
    with pytest.raises(SignatureError, match=problem) as error:
        make(value)
    assert str(error.value).startswith(needle) and "(int64)" in str(error.value)


@pytest.mark.parametrize("value", [2, 0.5, -1, None])
def test_a_bool_field_takes_only_true_false_or_0_1(value) -> None:
    with pytest.raises(SignatureError, match=r"instances\[0\] field 'on' must (be true/false|not be null)"):
        INTS_MIXED.from_instances([{"n": 1, "on": value, "s": "u"}])
    rows = INTS_MIXED.from_columns({"n": [-(2**62), 2**62], "on": [True, 0], "s": ["u", None]})
    assert rows["n"].tolist() == [-(2.0**62), 2.0**62] and rows["on"].tolist() == [1.0, 0.0]


def _v2(schema: InputSchema, tensors: list[dict]) -> object:
    from loopstack.serving.models import ModelAdapter
    from loopstack.serving.v2 import decode_inputs

    return decode_inputs({"inputs": tensors}, b"", ModelAdapter("m", "1", schema, "predict", None))
