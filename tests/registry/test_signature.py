"""Signatures: inference from pandas, NumPy and Arrow, and the input checks on predict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopstack.core.errors import SignatureError, ValidationError
from loopstack.registry.checks import check_input
from loopstack.registry.signature import ColumnSpec, Signature, infer_schema, infer_signature

FRAME = pd.DataFrame(
    {
        "age": np.array([31, 45, 27], dtype="int64"),
        "income": [1.5, 2.0, 0.5],
        "city": ["a", "b", "c"],
        "active": [True, False, True],
        "seen": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
    }
)


def test_infer_from_pandas_names_every_dtype():
    schema = infer_schema(FRAME)
    assert schema.columns == (
        ColumnSpec("age", "int64"),
        ColumnSpec("income", "float64"),
        ColumnSpec("city", "string"),
        ColumnSpec("active", "bool"),
        ColumnSpec("seen", str(FRAME["seen"].dtype)),
    )
    assert (schema.kind, schema.container) == ("columns", "pandas")


def test_infer_from_numpy_and_arrow():
    schema = infer_schema(np.zeros((5, 3), dtype=np.float32))
    assert (schema.kind, schema.dtype, schema.shape) == ("tensor", "float32", (-1, 3))
    table = pa.table({"x": pa.array([1, 2], pa.int32()), "s": ["a", "b"], "f": [0.5, 1.0], "b": [True, False]})
    assert [(c.name, c.dtype) for c in infer_schema(table).columns] == [
        ("x", "int32"),
        ("s", "string"),
        ("f", "float64"),
        ("b", "bool"),
    ]
    with pytest.raises(ValidationError, match="scalar"):
        infer_schema(np.float64(1.0))
    with pytest.raises(ValidationError, match="cannot infer a signature from set"):
        infer_schema({1, 2})


def test_signature_round_trips_through_json():
    import json

    signature = infer_signature(FRAME, np.zeros(3))
    assert Signature.from_dict(json.loads(json.dumps(signature.to_dict()))) == signature


def test_missing_column_is_named_with_expected_and_given():
    schema = infer_schema(FRAME)
    with pytest.raises(SignatureError, match=r"missing column\(s\) \['income'\]") as error:
        check_input(schema, FRAME.drop(columns="income"))
    assert "income: float64" in str(error.value) and "'city'" in str(error.value)


def test_string_into_float_is_an_error_naming_the_column():
    schema = infer_schema(FRAME)
    bad = FRAME.assign(income=["1.5", "2.0", "0.5"])
    with pytest.raises(SignatureError, match=r"column 'income': expected float64, got string"):
        check_input(schema, bad)


def test_every_problem_is_reported_at_once():
    schema = infer_schema(FRAME)
    bad = FRAME.assign(income=["x", "y", "z"], age=[1.5, 2.5, 3.5])
    with pytest.raises(SignatureError) as error:
        check_input(schema, bad)
    assert "column 'income'" in str(error.value) and "column 'age': expected int64, got float64" in str(error.value)


def test_int_into_float_is_cast_and_columns_reordered_extra_dropped():
    schema = infer_schema(pd.DataFrame({"a": [1.0], "b": [2.0]}))
    checked = check_input(schema, pd.DataFrame({"extra": ["x"], "b": [3], "a": [np.int32(4)]}))
    assert list(checked.columns) == ["a", "b"]
    assert list(checked.dtypes) == [np.float64, np.float64]
    assert checked.to_numpy().tolist() == [[4.0, 3.0]]


def test_integer_narrowing_only_when_values_fit():
    schema = infer_schema(pd.DataFrame({"n": np.array([1], dtype="int8")}))
    assert check_input(schema, pd.DataFrame({"n": [100]}))["n"].dtype == np.int8
    with pytest.raises(SignatureError, match="outside the int8 range"):
        check_input(schema, pd.DataFrame({"n": [1000]}))


def test_float_narrowing_refuses_a_value_it_would_make_infinite():
    """float64 -> float32 turned 1e39 into inf without a word, though a cast must never change a value."""
    schema = infer_schema(pd.DataFrame({"x": np.array([1.0], dtype="float32")}))
    assert check_input(schema, pd.DataFrame({"x": [0.5, np.nan, np.inf, -3e38]}))["x"].dtype == np.float32
    with pytest.raises(SignatureError, match=r"column 'x': expected float32, got float64 with -1e\+39, beyond"):
        check_input(schema, pd.DataFrame({"x": [0.5, -1e39]}))
    tensor = infer_schema(np.zeros((1, 2), dtype="float32"))
    with pytest.raises(SignatureError, match=r"input array: expected float32, got float64 with 1e\+300, beyond"):
        check_input(tensor, np.array([[1.0, 1e300]]))


def test_missing_values_sent_to_an_integer_column_are_called_missing():
    """A nullable Int64 column with <NA> was said to hold 'values outside the int32 range'."""
    schema = infer_schema(pd.DataFrame({"n": np.array([1], dtype="int32")}))
    with pytest.raises(SignatureError, match=r"column 'n': expected int32, got int64 with 1 missing value\(s\)"):
        check_input(schema, pd.DataFrame({"n": pd.array([1, None, 3], dtype="Int64")}))
    assert check_input(schema, pd.DataFrame({"n": pd.array([1, 2], dtype="Int64")}))["n"].tolist() == [1, 2]


def test_tensor_width_and_rank_are_checked():
    schema = infer_schema(np.zeros((2, 4)))
    with pytest.raises(SignatureError, match=r"axis 1: expected size 4, got 3 \(the model takes 4 features"):
        check_input(schema, np.zeros((5, 3)))
    with pytest.raises(SignatureError, match=r"expects shape \(n, 4\)"):
        check_input(schema, np.zeros(4))
    with pytest.raises(SignatureError, match="input array: expected float64, got string"):
        check_input(schema, np.array([["1", "2", "3", "4"]]))
    assert check_input(schema, np.ones((2, 4), dtype=np.int64)).dtype == np.float64
    assert check_input(schema, pd.DataFrame(np.ones((2, 4)))).shape == (2, 4)


def test_columns_from_array_dict_records_and_arrow():
    schema = infer_schema(pd.DataFrame({"a": [1.0], "b": [2.0]}))
    assert check_input(schema, np.array([[1.0, 2.0]])).columns.tolist() == ["a", "b"]
    assert check_input(schema, {"b": [1.0], "a": [2.0]})["a"].tolist() == [2.0]
    assert check_input(schema, [{"a": 1, "b": 2}])["b"].tolist() == [2.0]
    assert check_input(schema, pa.table({"a": [1.0], "b": [2.0]}))["a"].tolist() == [1.0]
    with pytest.raises(SignatureError, match=r"expects 2 columns \(a, b\)"):
        check_input(schema, np.zeros((1, 3)))


def test_arrow_schema_returns_arrow():
    schema = infer_schema(pa.table({"a": [1.0]}))
    checked = check_input(schema, pd.DataFrame({"a": [1], "z": [0]}))
    assert isinstance(checked, pa.Table) and checked.schema.names == ["a"]
    assert checked.column("a").type == pa.float64()



def test_an_arrow_table_passes_its_own_signature_with_nulls_and_time_zones():
    """Its int and bool columns with nulls came back from to_pandas as float64 and object, and a time zone
    was dropped from the signature, so the table a model was logged with failed its own signature."""
    table = pa.table({
        "i": pa.array([1, None], pa.int32()),
        "b": pa.array([True, None]),
        "t": pa.array([1, 2], pa.timestamp("us", tz="UTC")),
        "f": [1.5, 2.5],
    })  # fmt: skip
    schema = infer_schema(table)
    assert str(schema) == "{i: int32, b: bool, t: datetime64[us, UTC], f: float64}"
    checked = check_input(schema, table)
    assert checked.schema == table.schema and checked.equals(table)
    with pytest.raises(SignatureError, match=r"column 't': expected datetime64\[us, UTC\], got datetime64\[us\]"):
        check_input(schema, table.set_column(2, "t", pa.array([1, 2], pa.timestamp("us"))))

_DTYPES = st.sampled_from(["int64", "int32", "float64", "float32", "bool", "string"])


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    names = draw(st.lists(st.text("abcdefgh_", min_size=1, max_size=6), min_size=1, max_size=6, unique=True))
    rows = draw(st.integers(0, 5))
    columns = {}
    for name in names:
        dtype = draw(_DTYPES)
        if dtype == "string":
            columns[name] = pd.Series(draw(st.lists(st.text(max_size=3), min_size=rows, max_size=rows)), dtype=object)
        elif dtype == "bool":
            columns[name] = pd.Series(draw(st.lists(st.booleans(), min_size=rows, max_size=rows)), dtype=bool)
        else:
            values = draw(st.lists(st.integers(-100, 100), min_size=rows, max_size=rows))
            columns[name] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(columns)


@settings(max_examples=40, deadline=None)
@given(frame=frames(), data=st.data())
def test_property_a_frame_passes_its_own_signature_in_any_column_order(frame, data):
    schema = infer_schema(frame)
    shuffled = frame[data.draw(st.permutations(list(frame.columns)))]
    checked = check_input(schema, shuffled)
    assert list(checked.columns) == list(frame.columns)
    assert infer_schema(checked) == schema
    pd.testing.assert_frame_equal(checked, frame, check_dtype=False)


@settings(max_examples=40, deadline=None)
@given(frame=frames(), data=st.data())
def test_property_dropping_any_column_is_reported_by_name(frame, data):
    dropped = data.draw(st.sampled_from(list(frame.columns)))
    with pytest.raises(SignatureError) as error:
        check_input(infer_schema(frame), frame.drop(columns=dropped))
    assert repr(dropped) in str(error.value)
