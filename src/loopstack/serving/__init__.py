"""Model serving: an online server with dynamic batching, batch and stream inference, ONNX export.

The online server (`create_app`, ``loopstack serve``) speaks a native JSON API
and the Open Inference Protocol v2, batches concurrent requests per model,
logs every prediction to Parquet (`read_prediction_log`) and exports
Prometheus metrics. Heavy modules (batch files, streams, ONNX) load on use.
"""

from __future__ import annotations

from loopstack.core.lazy import lazy_exports

_EXPORTS = {
    "create_app": "loopstack.serving.app",
    "ModelSpec": "loopstack.serving.config",
    "ServerSettings": "loopstack.serving.config",
    "Batcher": "loopstack.serving.batcher",
    "QueueFullError": "loopstack.serving.batcher",
    "InputSchema": "loopstack.serving.inputs",
    "ModelAdapter": "loopstack.serving.models",
    "PredictionLog": "loopstack.serving.predlog",
    "read_prediction_log": "loopstack.serving.predlog",
    "read_feedback": "loopstack.serving.predlog",
    "serve": "loopstack.serving.server",
    "predict_file": "loopstack.serving.batch",
    "RedisStreamConsumer": "loopstack.serving.stream",
    "NatsStreamConsumer": "loopstack.serving.stream",
    "export_onnx": "loopstack.serving.edge",
    "OnnxModel": "loopstack.serving.edge",
    "ParityReport": "loopstack.serving.edge",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
