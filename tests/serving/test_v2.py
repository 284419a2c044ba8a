"""Open Inference Protocol v2, driven by the real tritonclient in JSON and binary-tensor modes."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator

import httpx2 as httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tests.serving.conftest import running
from tritonclient.utils import InferenceServerException

from loopstack.serving import ModelSpec, ServerSettings, create_app


@pytest.fixture(scope="module")
def address(clf) -> Iterator[str]:
    with running(create_app([ModelSpec(name="fraud", model=clf)])) as served:
        yield served


@pytest.fixture
def client(address: str) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(address)
    try:
        yield client
    finally:
        client.close()


def test_health_and_metadata(client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("fraud") and not client.is_model_ready("nope")
    meta = client.get_model_metadata("fraud")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 20],
                               "parameters": {"fields": [f"x{j}" for j in range(20)]}}]
    assert meta["outputs"][0]["name"] == "predict_proba" and meta["versions"] == ["1"]
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    assert client.get_model_metadata("fraud", model_version="1")["name"] == "fraud"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_infer_matches_the_model(client, clf, data, binary: bool, datatype: str) -> None:
    X, _ = data
    x = X[:7].astype(np.float32 if datatype == "FP32" else np.float64)
    tensor = triton.InferInput("input", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [triton.InferRequestedOutput("predict_proba", binary_data=binary)]
    result = client.infer("fraud", [tensor], outputs=outputs, request_id="abc")
    np.testing.assert_allclose(result.as_numpy("predict_proba"), clf.predict_proba(x.astype(np.float64)))
    assert result.get_response()["id"] == "abc"


def test_infer_without_outputs_returns_binary(client, clf, data) -> None:
    X, _ = data
    tensor = triton.InferInput("input", [2, 20], "FP64")
    tensor.set_data_from_numpy(X[:2])
    result = client.infer("fraud", [tensor], model_version="1")
    assert "data" not in result.get_output("predict_proba")  # the bytes came after the JSON header
    np.testing.assert_allclose(result.as_numpy("predict_proba"), clf.predict_proba(X[:2]))


def test_one_tensor_per_field(client, clf, data) -> None:
    X, _ = data
    tensors = []
    for j in range(20):
        tensor = triton.InferInput(f"x{j}", [3], "FP64")
        tensor.set_data_from_numpy(np.ascontiguousarray(X[:3, j]), binary_data=j % 2 == 0)
        tensors.append(tensor)
    result = client.infer("fraud", tensors)
    np.testing.assert_allclose(result.as_numpy("predict_proba"), clf.predict_proba(X[:3]))


@pytest.mark.parametrize(("shape", "datatype", "values", "needle"), [
    ([2, 19], "FP64", np.zeros((2, 19)), "input 'input' has shape [2, 19]"),
    ([2], "BYTES", np.array([b"a", b"b"], dtype=object), "input 'input' has shape [2]"),
    ([1, 20], "BYTES", np.array([[b"a"] * 20], dtype=object), "input 'input' has datatype BYTES"),
    ([1, 20], "INT64", np.zeros((1, 20), dtype=np.int64), None),
])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_wrong_shape_or_datatype_is_400_naming_the_tensor(client, shape, datatype, values, needle, binary) -> None:
    tensor = triton.InferInput("input", shape, datatype)
    tensor.set_data_from_numpy(values, binary_data=binary)
    if needle is None:  # integers are numbers: accepted
        assert client.infer("fraud", [tensor]).as_numpy("predict_proba").shape == (1, 2)
        return
    with pytest.raises(InferenceServerException) as raised:
        client.infer("fraud", [tensor])
    assert raised.value.status() == "400"
    assert needle in raised.value.message()


@pytest.mark.parametrize(("body", "headers", "needle"), [
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP64", "data": [1.0] * 19}]}, {}, "has 19 values"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP99", "data": [1.0] * 20}]}, {}, "datatype 'FP99'"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP64", "data": ["a"] * 20}]}, {}, "non-numbers"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP64"}]}, {}, "neither 'data'"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP64",
                  "parameters": {"binary_data_size": 160}}]}, {}, "beyond the 0 bytes"),
    ({"inputs": [{"name": "x0", "shape": [1], "datatype": "FP64", "data": [1.0]},
                 {"name": "x1", "shape": [1], "datatype": "FP64", "data": [1.0]}]}, {}, "input 'x2' is missing"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP64", "data": [1.0] * 20}],
      "outputs": [{"name": "bogus"}]}, {}, "output 'bogus' is unknown"),
    ({"inputs": [{"name": "input", "shape": [0, 20], "datatype": "FP64", "data": []}]}, {}, "no rows"),
    ({"inputs": []}, {}, "non-empty list"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP64", "data": [1.0] * 20}]},
     {"inference-header-content-length": "99999"}, "outside the body"),
    (b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", {}, "nested too deeply"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP64", "data": [1.0] * 20, "parameters": "x"}]},
     {}, "input 'input': 'parameters' must be an object"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP64", "data": [1.0] * 20}], "parameters": 3},
     {}, "'parameters' must be an object"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP64", "data": [1.0] * 20}],
      "outputs": [{"name": "predict_proba", "parameters": ["binary_data"]}]}, {},
     "output 'predict_proba': 'parameters'"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP64", "data": [1.0] * 20}],
      "outputs": ["predict_proba"]}, {}, "each of 'outputs' must be an object like"),  # was "output None is unknown"
    ({"inputs": [{"name": f"x{j}", "shape": [1], "datatype": "FP64", "data": [1.0]} for j in range(20)]
      + [{"name": "x3", "shape": [1], "datatype": "FP64", "data": [2.0]}]}, {}, "input 'x3' is sent twice"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "INT8", "data": [1] * 19 + [300]}]}, {},
     "input 'input': data does not fit datatype INT8"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "UINT8", "data": [1] * 19 + [-1]}]}, {},
     "input 'input': data does not fit datatype UINT8"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "INT32", "data": [1] * 19 + [1.5]}]}, {},
     "input 'input': data does not fit datatype INT32"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "INT64", "data": [1] * 19 + [2**70]}]}, {},
     "input 'input': data does not fit datatype INT64"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP16", "data": [1.0] * 19 + [1e10]}]}, {},
     "input 'input': data does not fit datatype FP16"),
    # an empty tensor of a huge shape: prod(shape) == 0 matched the empty data, then reshape raised (a 500)
    ({"inputs": [{"name": "input", "shape": [2**62, 0], "datatype": "FP64", "data": []}]}, {},
     "input 'input' has shape [4611686018427387904, 0], larger than NumPy can hold"),
    ({"inputs": [{"name": "input", "shape": [2**40, 2**40, 0], "datatype": "FP64", "data": []}]}, {},
     "input 'input' has shape [1099511627776, 1099511627776, 0]"),
    (b'{"inputs": [{"name": "input", "shape": [4611686018427387904, 0], "datatype": "FP64", '
     b'"parameters": {"binary_data_size": 0}}]}', {"inference-header-content-length": "125"},
     "input 'input' has shape [4611686018427387904, 0]"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP64", "data": [1.0] * 20}]},
     {"inference-header-content-length": "+12"}, "Inference-Header-Content-Length '+12' is not an integer"),
    ({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP64", "data": [1.0] * 20}]},
     {"inference-header-content-length": "1_0"}, "Inference-Header-Content-Length '1_0' is not an integer"),
    (b'{"inputs": [{"name": "input", "shape": [1, 1], "datatype": "UINT8", "parameters": {"binary_data_size": '
     b'true}}]}' + b"\x01", {"inference-header-content-length": "111"},
     "input 'input': parameters.binary_data_size must be a number of bytes, got True"),
    (zlib.compress(b'{"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP64", "data": [' + b"1.0, " * 19
                   + b'1.0]}]}') + b"zz", {"content-encoding": "deflate"},
     "not valid deflate: 2 bytes follow the compressed data"),
])
def test_malformed_v2_requests_are_400(address: str, body, headers, needle: str) -> None:
    """Each was answered: a 500 (deep nesting, 'parameters' not an object), the last tensor of a repeated name
    silently, or integers wrapped around (300 as INT8 reached the model as 44)."""
    content = body if isinstance(body, bytes) else json.dumps(body)
    response = httpx.post(f"http://{address}/v2/models/fraud/infer", content=content, headers=headers)
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]


def test_gzip_body_and_unknown_model_and_version(address: str, data) -> None:
    X, _ = data
    body = {"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP64", "data": X[0].tolist()}]}
    zipped = httpx.post(f"http://{address}/v2/models/fraud/infer", content=gzip.compress(json.dumps(body).encode()),
                        headers={"content-encoding": "gzip"})
    assert zipped.status_code == 200 and zipped.json()["outputs"][0]["shape"] == [1, 2]
    brotli = httpx.post(f"http://{address}/v2/models/fraud/infer", content=b"\x8b\x02\x80", headers={
        "content-encoding": "br"})  # was read as JSON: "not valid JSON", a 400 that hid the real cause
    assert brotli.status_code == 415 and "Content-Encoding 'br' is not supported" in brotli.json()["error"]
    assert httpx.post(f"http://{address}/v2/models/nope/infer", json=body).status_code == 404
    wrong = httpx.post(f"http://{address}/v2/models/fraud/versions/7/infer", json=body)
    assert wrong.status_code == 404 and "served version is 1" in wrong.json()["error"]


def test_a_compressed_body_decodes_only_up_to_the_body_limit(clf, data) -> None:
    """A 10 KB gzip body of 10 MB was decoded whole (a 400 KB one took 500 MiB and 6 s of the event loop)."""
    X, _ = data
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 20], "datatype": "FP64", "data": X[0].tolist()}]})
    half, rest = body.encode()[:50], body.encode()[50:]
    app = create_app([ModelSpec(name="fraud", model=clf)], ServerSettings(max_body_bytes=100_000))
    with running(app) as served, httpx.Client(base_url=f"http://{served}/v2/models/fraud") as client:
        bomb = client.post("/infer", content=gzip.compress(b" " * 10_000_000), headers={"content-encoding": "gzip"})
        members = client.post("/infer", content=gzip.compress(half) + gzip.compress(rest),
                              headers={"content-encoding": "gzip"})
        deflated = client.post("/infer", content=zlib.compress(body.encode()), headers={"content-encoding": "deflate"})
        cut = client.post("/infer", content=gzip.compress(body.encode())[:-12], headers={"content-encoding": "gzip"})
    assert bomb.status_code == 413, bomb.text
    assert "more than 100000 bytes" in bomb.json()["error"] and "max_body_bytes" in bomb.json()["error"]
    assert members.status_code == deflated.status_code == 200, (members.text, deflated.text)
    assert cut.status_code == 400 and "not valid gzip" in cut.json()["error"]


def test_metadata_names_the_library_a_compiled_model_came_from(clf) -> None:
    """The registry serves a HistGradientBoosting model in its compiled form: it reported "loopstack-loopstack"."""
    from loopstack.registry.flavors import trees
    from loopstack.serving import ModelSpec
    from loopstack.serving.models import adapt
    from loopstack.serving.v2 import model_metadata

    compiled = trees.load(trees.dump(trees.compile_trees(clf)))
    assert model_metadata(adapt(compiled, ModelSpec(name="m", model=compiled)))["platform"] == "loopstack-sklearn"
    assert model_metadata(adapt(clf, ModelSpec(name="m", model=clf)))["platform"] == "loopstack-sklearn"


def test_binary_bytes_that_are_not_utf8_are_refused_by_element_not_replaced() -> None:
    """An undecodable element became U+FFFD and reached the model as other text than was sent."""
    import struct

    from loopstack.core.errors import SignatureError
    from loopstack.serving.v2 import _unpack_bytes

    good, bad = "café".encode(), b"\xff\xfe"
    raw = b"".join(struct.pack("<I", len(v)) + v for v in (good, bad))
    with pytest.raises(SignatureError, match=r"input 'name': BYTES element 1 is not UTF-8 text"):
        _unpack_bytes(raw, "name")
    assert list(_unpack_bytes(struct.pack("<I", len(good)) + good, "name")) == ["café"]


def test_bad_outputs_are_refused_before_the_row_is_scored_or_logged(clf, data, tmp_path) -> None:
    """`outputs` was checked only when the answer was encoded, after the batch ran: the client got a 400
    for a row that had been scored and written to the prediction log."""
    from loopstack.serving import read_prediction_log

    X, _ = data
    tensor = {"name": "input", "shape": [1, 20], "datatype": "FP64", "data": X[0].tolist()}
    app = create_app([ModelSpec(name="fraud", model=clf)], ServerSettings(log_dir=str(tmp_path), log_flush_s=3600))
    with running(app) as served, httpx.Client(base_url=f"http://{served}/v2/models/fraud") as client:
        for outputs in ([{"name": "nope"}], "predict_proba", [{"name": "predict_proba", "parameters": 1}]):
            refused = client.post("/infer", json={"id": "bad", "inputs": [tensor], "outputs": outputs})
            assert refused.status_code == 400 and "output" in refused.json()["error"]
        assert client.post("/infer", json={"id": "good", "inputs": [tensor]}).status_code == 200
    assert read_prediction_log(tmp_path).column("request_id").to_pylist() == ["good"]


def test_uint64_json_data_beyond_int64_is_kept_exact() -> None:
    """[1, 2**63 + 1] made NumPy pick float64 (2**63 + 1 rounded to 2**63), and the tensor held another value."""
    from loopstack.serving.v2 import _fromjson

    array = _fromjson([1, 2**63 + 1, 2**64 - 1], np.dtype("uint64"), "input", "UINT64")
    assert array.dtype == np.uint64 and array.tolist() == [1, 2**63 + 1, 2**64 - 1]
    for data in ([-1, 2**63], [1, 2**64]):
        with pytest.raises(Exception, match="input 'input': data does not fit datatype UINT64"):
            _fromjson(data, np.dtype("uint64"), "input", "UINT64")
    with pytest.raises(Exception, match="does not fit datatype INT64"):
        _fromjson([1, 2**63], np.dtype("int64"), "input", "INT64")
