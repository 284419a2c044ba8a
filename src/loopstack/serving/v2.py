"""The Open Inference Protocol (KServe/Triton "v2"): tensors in, tensors out, JSON or binary.

A request body is JSON, unless the ``Inference-Header-Content-Length`` header
says the JSON header is only its first N bytes; then the raw bytes of tensors
that declare ``parameters.binary_data_size`` follow it, in input order (the
binary tensor extension). A body without that header is JSON whatever its
Content-Type, which is what tritonclient's JSON mode sends.

Inputs map onto the model's schema in one of two ways: one 2-D tensor
``[rows, fields]`` (any name; metadata advertises it as ``input``), or one
1-D tensor per field, named after it. Every error names the tensor.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import numpy as np

from loopstack.core.errors import SignatureError, ValidationError
from loopstack.serving import jsonio
from loopstack.serving.inputs import Rows
from loopstack.serving.models import ModelAdapter

HEADER = "inference-header-content-length"
MAX_BODY_BYTES = 64 * 2**20  # ServerSettings.max_body_bytes's default
DTYPES = {
    "BOOL": np.dtype(bool), "UINT8": np.dtype("uint8"), "UINT16": np.dtype("uint16"), "UINT32": np.dtype("uint32"),
    "UINT64": np.dtype("uint64"), "INT8": np.dtype("int8"), "INT16": np.dtype("int16"), "INT32": np.dtype("int32"),
    "INT64": np.dtype("int64"), "FP16": np.dtype("float16"), "FP32": np.dtype("float32"), "FP64": np.dtype("float64"),
    "BYTES": np.dtype(object),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items() if name != "BYTES"}


class UnsupportedEncodingError(ValidationError):
    """A Content-Encoding the server cannot decode (415): read as plain JSON it gave a misleading error."""

    http_status = 415


class BodyTooLargeError(ValidationError):
    """A request body larger than the server takes once decoded (413)."""

    http_status = 413


def parse_body(body: bytes, header_length: str | None, encoding: str | None = None,
               max_bytes: int = MAX_BODY_BYTES) -> tuple[dict[str, Any], bytes]:
    """Split a request body into its JSON header and the binary tensor data after it; a compressed body
    may decode to at most `max_bytes`."""
    body = decoded_body(body, encoding, max_bytes)
    size = len(body)
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()):  # int() took " 120 ", "+12" and "1_0"
            raise ValidationError(f"Inference-Header-Content-Length {header_length!r} is not an integer "
                                  "(send ASCII digits only)")
        size = int(header_length)
        if not 0 < size <= len(body):
            raise ValidationError(f"Inference-Header-Content-Length {size} is outside the body ({len(body)} bytes)")
    try:
        request = jsonio.loads(body[:size] if size < len(body) else body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValidationError(f"inference request header is not valid JSON ({error})") from None
    except RecursionError:  # json.loads, where orjson stops at 1024 levels
        raise ValidationError("inference request header is not valid JSON: it is nested too deeply") from None
    if not isinstance(request, dict):
        raise ValidationError("inference request must be a JSON object with an 'inputs' list")
    return request, body[size:]


def decoded_body(body: bytes, encoding: str | None, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The body as sent, decoded from its Content-Encoding: gzip, deflate or none (415 otherwise)."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedEncodingError(f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or none")
    return decompress(body, encoding, max_bytes)


def decompress(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """A gzip (all its members) or deflate (zlib) body, decoded to at most `max_bytes`.

    Decoded in bounded steps: a few hundred KB of gzip can expand to gigabytes, which a whole-body
    ``gzip.decompress`` would allocate, on the event loop, before anything could refuse it.
    """
    wbits = 31 if encoding == "gzip" else 15
    parts: list[bytes] = []
    size, data = 0, body
    try:
        while data:
            stream = zlib.decompressobj(wbits)
            part = stream.decompress(data, max_bytes - size + 1)
            size += len(part)
            if size > max_bytes:
                raise BodyTooLargeError(f"the request body decodes to more than {max_bytes} bytes, the server's "
                                        "limit (ServerSettings.max_body_bytes); send fewer rows per request")
            if not stream.eof:
                raise ValidationError(f"request body is not valid {encoding}: it ends inside the compressed data")
            parts.append(part)
            data = stream.unused_data
            if data and encoding == "deflate":  # one zlib stream; gzip may hold several members
                raise ValidationError(f"request body is not valid deflate: {len(data)} bytes follow the "
                                      "compressed data")
    except zlib.error as error:
        raise ValidationError(f"request body is not valid {encoding} ({error})") from None
    return b"".join(parts)


def decode_inputs(request: dict[str, Any], binary: bytes, adapter: ModelAdapter) -> Rows:
    """Checked rows from the request's input tensors."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, dict) for t in inputs):
        raise SignatureError("'inputs' must be a non-empty list of tensors {name, shape, datatype, data}")
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in inputs:
        name, array, offset = _tensor(tensor, binary, offset)
        if name in tensors:
            raise SignatureError(f"input {name!r} is sent twice; send each tensor once")
        tensors[name] = array
    if offset != len(binary):
        raise ValidationError(f"{len(binary) - offset} bytes of binary data follow the tensors that declared them")
    schema = adapter.schema
    if len(tensors) == 1:
        name, array = next(iter(tensors.items()))
        if name not in schema.names or (array.ndim == 2 and array.shape[1] == len(schema) > 1):
            return _matrix(name, array, adapter)
    arrays = {}
    for name in tensors:
        if name not in schema.names:
            raise SignatureError(f"input {name!r} is not a field of model {adapter.name!r}; fields: {schema.names}")
    for column in schema.columns:
        if column.name not in tensors:
            raise SignatureError(f"input {column.name!r} is missing; model {adapter.name!r} takes {schema.names}")
        arrays[column.name] = schema.check_column(column, tensors[column.name], f"input {column.name!r}")
    return schema.assemble(arrays)


def _tensor(tensor: dict[str, Any], binary: bytes, offset: int) -> tuple[str, np.ndarray, int]:
    name = tensor.get("name")
    if not isinstance(name, str):
        raise SignatureError(f"every input needs a string 'name', got {tensor.get('name')!r}")
    shape, datatype = tensor.get("shape"), tensor.get("datatype")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise SignatureError(f"input {name!r} needs a 'shape' of non-negative integers, got {shape!r}")
    dtype = DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise SignatureError(f"input {name!r} has datatype {datatype!r}; use one of {sorted(DTYPES)}")
    count = math.prod(shape)  # exact Python ints; np.prod on a list cost 6% of the loop per request
    size = _parameters(tensor, f"input {name!r}").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:  # true was read as 1
            raise SignatureError(f"input {name!r}: parameters.binary_data_size must be a number of bytes, got "
                                 f"{size!r:.40}")
        if offset + size > len(binary):
            raise SignatureError(
                f"input {name!r} declares binary_data_size {size!r} beyond the {len(binary)} bytes sent"
            )
        raw = binary[offset : offset + size]
        offset += size
        array = _unpack_bytes(raw, name) if datatype == "BYTES" else _frombuffer(raw, dtype, name, datatype)
    elif "data" in tensor:
        array = _fromjson(tensor["data"], dtype, name, datatype)
    else:
        raise SignatureError(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    if array.size != count:
        raise SignatureError(f"input {name!r} has {array.size} values but shape {shape} needs {count}")
    try:
        return name, array.reshape(shape), offset
    except ValueError:  # an empty tensor of a shape like [2**62, 0]: NumPy cannot hold that many rows
        raise SignatureError(f"input {name!r} has shape {shape}, larger than NumPy can hold; send the shape "
                             "of the data (empty data holds no rows)") from None


def _matrix(name: str, array: np.ndarray, adapter: ModelAdapter) -> Rows:
    schema = adapter.schema
    expected = f"[-1, {len(schema)}]"
    if array.ndim == 1 and len(schema) == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] != len(schema):
        raise SignatureError(
            f"input {name!r} has shape {list(array.shape)}; model {adapter.name!r} takes {expected} ({schema.names})"
        )
    if array.dtype.kind not in "fiub":
        raise SignatureError(f"input {name!r} has datatype BYTES; model {adapter.name!r} takes numbers (FP32/FP64)")
    if schema.all_numeric:  # integer and boolean fields are checked as the native path checks them
        return schema.check_exact(array.astype(np.float64, copy=False), f"input {name!r}")
    return schema.assemble({
        c.name: schema.check_column(c, array[:, j], f"input {name!r}",
                                    row=lambda i, field=c.name: f"input {name!r}[{i}] field {field!r}")
        for j, c in enumerate(schema.columns)
    })


def _frombuffer(raw: bytes, dtype: np.dtype, name: str, datatype: str) -> np.ndarray:
    if len(raw) % dtype.itemsize:
        raise SignatureError(f"input {name!r}: {len(raw)} bytes is not a whole number of {datatype} values")
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<"))


def _fromjson(data: Any, dtype: np.dtype, name: str, datatype: str) -> np.ndarray:
    if not isinstance(data, list):
        raise SignatureError(f"input {name!r}: 'data' must be a list, got {type(data).__name__}")
    try:
        array = np.asarray(data)
        if dtype.kind in "iu" and array.dtype.kind in "fO" and all(isinstance(v, int) for v in data):
            # integers beyond int64 (UINT64 values >= 2**63 beside others) made NumPy pick float64, which
            # rounds, or objects: build the integer tensor from the ints themselves (OverflowError out of range)
            return np.array(data, dtype=dtype)
        if dtype.kind != "O" and array.dtype.kind not in "fiub":
            raise SignatureError(f"input {name!r}: data holds non-numbers but the datatype is {datatype}")
        with np.errstate(invalid="ignore", over="ignore"):  # _fits tells the client what a wrapped cast lost
            converted = array.astype(dtype, copy=False)
    except (ValueError, TypeError, OverflowError):
        raise SignatureError(f"input {name!r}: data does not fit datatype {datatype}") from None
    if converted is not array and dtype.kind != "O" and not _fits(array, converted):
        raise SignatureError(f"input {name!r}: data does not fit datatype {datatype} (out of range, or a fraction "
                             "in an integer tensor)")
    return converted


def _fits(array: np.ndarray, converted: np.ndarray) -> bool:
    """Whether casting kept the values: integers must not wrap (300 as INT8 is 44) nor lose a fraction, and a
    finite number must not become infinite (1e10 as FP16); floats may round, as FP32 does."""
    if converted.dtype.kind == "f":
        return not (np.isinf(converted) & ~np.isinf(array)).any()
    return bool(np.array_equal(converted, array))


def _unpack_bytes(raw: bytes, name: str) -> np.ndarray:
    values, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise SignatureError(f"input {name!r}: BYTES data is cut inside an element length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise SignatureError(f"input {name!r}: BYTES element of {length} bytes runs past the data")
        try:  # a string field takes text: an undecodable element is refused, not silently replaced
            values.append(raw[offset : offset + length].decode("utf-8"))
        except UnicodeDecodeError as error:
            raise SignatureError(f"input {name!r}: BYTES element {len(values)} is not UTF-8 text ({error.reason} at "
                                 f"byte {error.start}); send text encoded as UTF-8") from None
        offset += length
    return np.array(values, dtype=object)


# -- responses ------------------------------------------------------------------------------
def encode_response(
    adapter: ModelAdapter, outputs: np.ndarray, request_id: str, binary: bool
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header length when tensors travel as binary (`binary`, as
    `wants_binary` read it from the request before its rows were queued)."""
    datatype = _NAMES.get(outputs.dtype, "BYTES")
    tensor: dict[str, Any] = {"name": adapter.method, "datatype": datatype, "shape": list(outputs.shape)}
    raw = b""
    if binary:
        raw = _pack_bytes(outputs) if datatype == "BYTES" else np.ascontiguousarray(outputs).astype(
            outputs.dtype.newbyteorder("<"), copy=False).tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
    else:
        tensor["data"] = outputs.ravel().tolist()
    header = jsonio.dumps({
        "model_name": adapter.name, "model_version": adapter.version, "id": request_id, "outputs": [tensor],
    }, None if binary else outputs)
    return (header + raw, len(header)) if binary else (header, None)


def wants_binary(request: dict[str, Any], adapter: ModelAdapter) -> bool:
    """Whether the response's tensors travel as binary, or a SignatureError for bad ``outputs``: called before
    the rows are queued, since a request refused after its batch ran had been scored and logged."""
    requested = request.get("outputs")
    if requested:
        if not isinstance(requested, list):
            raise SignatureError("'outputs' must be a list of {name, parameters}")
        binary = False
        for output in requested:
            if not isinstance(output, dict):
                raise SignatureError(f"each of 'outputs' must be an object like {{\"name\": {adapter.method!r}}}, "
                                     f"got {output!r}")
            name = output.get("name")
            if name != adapter.method:
                raise SignatureError(
                    f"output {name!r} is unknown; model {adapter.name!r} produces [{adapter.method!r}]"
                )
            binary = binary or bool(_parameters(output, f"output {name!r}").get("binary_data", False))
        return binary
    return bool(_parameters(request, "the request").get("binary_data_output", False))


def _parameters(owner: dict[str, Any], where: str) -> dict[str, Any]:
    """The ``parameters`` object of a request, input or output (empty when absent)."""
    parameters = owner.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise SignatureError(f"{where}: 'parameters' must be an object, got {type(parameters).__name__}")
    return parameters


def _pack_bytes(outputs: np.ndarray) -> bytes:
    parts = []
    for value in outputs.ravel():
        data = value if isinstance(value, bytes) else str(value).encode()
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def _library(model: Any) -> str:
    """The library a model comes from: a compiled form names the one it was compiled from."""
    library = getattr(model, "library", None)
    return library if isinstance(library, str) else type(model).__module__.split(".")[0]


def model_metadata(adapter: ModelAdapter) -> dict[str, Any]:
    """``GET /v2/models/{name}``: versions, platform, input and output tensors."""
    schema = adapter.schema
    if schema.all_numeric:
        inputs = [{"name": "input", "datatype": "FP64", "shape": [-1, len(schema)],
                   "parameters": {"fields": schema.names}}]
    else:
        inputs = [{"name": c.name, "datatype": _NAMES.get(c.dtype, "BYTES"), "shape": [-1]} for c in schema.columns]
    return {
        "name": adapter.name,
        "versions": [adapter.version],
        "platform": f"loopstack-{_library(adapter.model)}",
        "inputs": inputs,
        "outputs": [{"name": adapter.method, "datatype": "FP64", "shape": [-1, -1]}],
    }
