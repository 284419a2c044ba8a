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


FOUR = InputSchema((Column("n", np.dtype("int64")), Column("on", np.dtype(bool)), Column("s", np.dtype(object)),
                    Column("x", np.dtype("float64"))))
SURROGATE = "\ud800"  # JSON "\ud800": the json module accepts it, but no UTF-8 text holds it


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: MIXED.from_instances([{"a": 1, "s": "u"}, {"a": 2, "s": "x" + SURROGATE}]),
         "instances[1] field 's' is not valid Unicode text (a lone surrogate)"),
        (lambda: MIXED.from_instances([[1, SURROGATE]]), "instances[0] field 's' is not valid Unicode text"),
        (lambda: MIXED.from_columns({"a": [1, 2], "s": ["é", SURROGATE]}), "inputs.s[1] is not valid Unicode text"),
        (lambda: _v2(MIXED, [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]},
                             {"name": "s", "shape": [1], "datatype": "BYTES", "data": [SURROGATE]}]),
         "input 's'[0] is not valid Unicode text"),
    ],
    ids=["instances-objects", "instances-lists", "inputs", "v2-bytes-json"],
)
def test_a_lone_surrogate_in_a_string_field_is_refused_naming_it(make, needle: str) -> None:
    """It was accepted and failed later in pandas or the prediction log's Arrow conversion: a 500."""
    with pytest.raises(SignatureError) as error:
        make()
    assert str(error.value).startswith(needle)
    assert MIXED.from_columns({"a": [1.0], "s": ["café ☕"]})["s"].tolist() == ["café ☕"]


def test_true_and_false_are_1_and_0_in_numeric_fields_on_every_path() -> None:
    """`[true]` was 1.0 but `[true, null]` a 400 "must hold numbers ... got True": the object-array path alone
    refused booleans. NumPy and pandas read them as 1/0, and so does every path now."""
    floats = InputSchema.numeric(["x"])
    assert floats.from_columns({"x": [True, None]}).tolist()[0] == [1.0]
    assert np.isnan(floats.from_columns({"x": [True, None]})[1, 0])
    assert floats.from_instances([[True], [False]]).tolist() == [[1.0], [0.0]]
    assert INTS.from_instances([[True, None], [False, 2.5]])[:, 0].tolist() == [1.0, 0.0]
    assert INTS.from_columns({"n": [True, 2], "x": [False, None]})[:, 0].tolist() == [1.0, 2.0]
    rows = FOUR.from_instances([{"n": True, "on": False, "s": "u", "x": True},
                                {"n": 3, "on": True, "s": None, "x": None}])
    assert rows["n"].tolist() == [1.0, 3.0] and rows["on"].tolist() == [0.0, 1.0] and rows["x"][0] == 1.0
    columns = FOUR.from_columns({"n": [False], "on": [True], "s": ["u"], "x": [True]})
    assert columns["n"].tolist() == [0.0] and columns["x"].tolist() == [1.0]
    v2 = _v2(INTS, [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [True, False]}])
    assert v2.tolist() == [[1.0, 0.0]]
    with pytest.raises(SignatureError, match=r"inputs.n\[1\] must not be null"):  # null stays refused for ints
        INTS.from_columns({"n": [True, None], "x": [1.0, 2.0]})
    with pytest.raises(SignatureError, match="must hold numbers"):
        floats.from_columns({"x": [True, {"k": 1}]})


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: FOUR.from_instances([{"n": 1, "on": True, "s": ["a"], "x": [1.5]}]), "instances[0] field 's'"),
        (lambda: FOUR.from_instances([{"n": 1, "on": True, "s": "a", "x": 1.0},
                                      {"n": 1, "on": True, "s": "a", "x": [1.5]}]), "instances[1] field 'x'"),
        (lambda: FOUR.from_instances([[[1], True, "a", 1.5]]), "instances[0] field 'n'"),
        (lambda: FOUR.from_columns([{"n": 1, "on": [True], "s": "a", "x": 1.5}]), "instances[0] field 'on'"),
    ],
    ids=["objects", "second-row", "lists", "inputs-as-rows"],
)
def test_a_field_of_a_row_takes_one_value_not_a_list(make, needle: str) -> None:
    """`"x": [1.5]` in a row was unwrapped to 1.5 (a 200): the (n, 1) squeeze meant for columns applied to the
    values gathered from rows."""
    with pytest.raises(SignatureError, match="must be one value, not a list") as error:
        make()
    assert str(error.value).startswith(needle)


def test_a_column_may_still_be_sent_as_one_value_lists() -> None:
    rows = FOUR.from_columns({"n": [[1], [2]], "on": [[True], [False]], "s": [["a"], ["b"]], "x": [[1.5], [2.5]]})
    assert rows["x"].tolist() == [1.5, 2.5] and rows["s"].tolist() == ["a", "b"] and rows["n"].tolist() == [1.0, 2.0]
    assert InputSchema.numeric(["x", "y"]).from_columns({"x": [[1.5]], "y": [[2.5]]}).tolist() == [[1.5, 2.5]]
