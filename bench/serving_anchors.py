"""The anchor servers of bench/serving.py, each started in its own virtualenv (bench/anchors.sh).

    python bench/serving_anchors.py fastapi PORT     # plain FastAPI, predict per request
    python bench/serving_anchors.py kserve PORT      # KServe ModelServer, v1 and v2 endpoints
    bentoml serve serving_anchors:Fraud --port PORT  # BentoML with adaptive batching (cwd: bench/)

Every server trains the same model on the same generated data (`make_model`),
so their answers can be compared with loopstack's. Only the standard library,
NumPy and scikit-learn are imported at the top: this file runs in every venv.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

N_FEATURES = 20
MAX_BATCH = 64


def make_model() -> Any:
    """A HistGradientBoostingClassifier on 20 float features, identical in every process."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(42)
    X = rng.normal(size=(20_000, N_FEATURES))
    y = (X[:, 0] + 0.5 * X[:, 1] - X[:, 2] + rng.normal(scale=0.5, size=len(X)) > 0).astype(int)
    with threadpool_limits(1):  # training threads would fight the other engineers' jobs
        return HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(X, y)


def serve_fastapi(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    model = make_model()
    app = FastAPI()

    @app.post("/predict")
    def predict(body: dict[str, Any]) -> dict[str, Any]:
        return {"predictions": model.predict_proba(np.asarray(body["instances"], dtype=float)).tolist()}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_kserve(port: int) -> None:
    import kserve
    from kserve import InferOutput, InferRequest, InferResponse

    class Fraud(kserve.Model):
        def __init__(self) -> None:
            super().__init__("fraud")
            self.model = make_model()
            self.ready = True

        def predict(self, payload: Any, headers: Any = None) -> Any:
            if isinstance(payload, InferRequest):
                proba = self.model.predict_proba(payload.inputs[0].as_numpy().astype(float))
                output = InferOutput(name="predict_proba", shape=list(proba.shape), datatype="FP64")
                output.set_data_from_numpy(proba, binary_data=False)
                return InferResponse(response_id=payload.id or "0", model_name=self.name, infer_outputs=[output])
            return {"predictions": self.model.predict_proba(np.asarray(payload["instances"], dtype=float)).tolist()}

    kserve.ModelServer(http_port=port, workers=1, enable_grpc=False).start([Fraud()])


try:  # the BentoML service is defined only where bentoml is installed
    import bentoml

    @bentoml.service(workers=1, traffic={"timeout": 60})
    class Fraud:
        def __init__(self) -> None:
            self.model = make_model()

        @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=10_000)
        def predict(self, instances: np.ndarray) -> np.ndarray:
            return self.model.predict_proba(instances)
except ImportError:
    pass


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    {"fastapi": serve_fastapi, "kserve": serve_kserve}[kind](port)
