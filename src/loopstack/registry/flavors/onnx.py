"""ONNX models, run with onnxruntime on the CPU.

Input is fed the way converters lay it out: a graph with one input gets the
whole matrix, cast to that input's element type; a graph with one input per
column (skl2onnx with a DataFrame) gets each column as an ``(n, 1)`` tensor.
Classifiers converted by skl2onnx return probabilities through a ZipMap (a
list of ``{label: p}`` dicts per row); `predict_proba` turns that back into
the ``(n, classes)`` array scikit-learn gives. Convert with
``options={"zipmap": False}`` to skip that per-row step.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loopstack.core.errors import ValidationError
from loopstack.registry.flavors.base import defined_in

FILE = "model.onnx"
_ELEMENT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


class OnnxPredictor:
    """An onnxruntime session with `predict` and, for classifiers, `predict_proba`."""

    def __init__(self, session: Any) -> None:
        self.raw = session
        self.inputs = session.get_inputs()
        self.outputs = [output.name for output in session.get_outputs()]
        self.proba_output = _probability_output(self.outputs)
        if self.proba_output is not None:
            self.predict_proba = self._predict_proba

    def predict(self, data: Any) -> Any:
        result = self.raw.run([self.outputs[0]], self._feed(data))[0]
        if getattr(result, "ndim", 0) == 2 and result.shape[1] == 1:
            return result.ravel()  # one output per row, as scikit-learn returns it
        return result

    def _predict_proba(self, data: Any) -> Any:
        import numpy as np

        result = self.raw.run([self.proba_output], self._feed(data))[0]
        if isinstance(result, list):  # a ZipMap: one {label: probability} per row
            if not result:
                return np.empty((0, 0))
            labels = list(result[0])
            return np.array([[row[label] for label in labels] for row in result], dtype=np.float64)
        return result

    def _feed(self, data: Any) -> dict[str, Any]:
        import numpy as np

        if len(self.inputs) == 1:
            node = self.inputs[0]
            array = data.to_numpy() if hasattr(data, "to_numpy") else np.asarray(data)
            return {node.name: array.astype(_ELEMENT_TYPES.get(node.type, array.dtype), copy=False)}
        if not hasattr(data, "columns"):
            names = [node.name for node in self.inputs]
            raise ValidationError(
                f"this ONNX model takes one input per column ({names}); pass a DataFrame with those columns"
            )
        feed = {}
        for node in self.inputs:
            column = data[node.name].to_numpy().reshape(-1, 1)
            feed[node.name] = column.astype(_ELEMENT_TYPES.get(node.type, column.dtype), copy=False)
        return feed


class OnnxFlavor:
    """Save and load `onnx.ModelProto` graphs."""

    name = "onnx"
    libraries = ("onnx", "onnxruntime")

    def matches(self, model: Any) -> bool:
        return defined_in(model, "onnx") and type(model).__name__ == "ModelProto"

    def save(self, model: Any, directory: Path) -> dict[str, Any]:
        if not self.matches(model):
            raise ValidationError(
                f"the onnx flavor saves onnx.ModelProto graphs, not {type(model).__name__}; "
                "convert the model first (e.g. skl2onnx.to_onnx)"
            )
        (directory / FILE).write_bytes(model.SerializeToString())
        return {"file": FILE}

    def load(self, files: Mapping[str, bytes], options: Mapping[str, Any]) -> OnnxPredictor:
        import onnxruntime

        session = onnxruntime.InferenceSession(files[options.get("file", FILE)], providers=["CPUExecutionProvider"])
        return OnnxPredictor(session)


def _probability_output(outputs: list[str]) -> str | None:
    for name in outputs:
        if "prob" in name.lower():
            return name
    return None


FLAVOR = OnnxFlavor()
