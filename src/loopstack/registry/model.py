"""A loaded model: one interface over every flavor, with the signature enforced."""

from __future__ import annotations

from typing import Any

from loopstack.core.errors import ValidationError
from loopstack.registry.checks import check_input
from loopstack.registry.flavors.base import Predictor
from loopstack.registry.signature import Signature


class LoadedModel:
    """A model loaded from the store, whatever its flavor.

    Input to `predict` and `predict_proba` is checked against the signature
    (when the model was logged with an example) and put into its column order
    and dtypes first. `raw` is the library's own object.

    Examples
    --------
    >>> import loopstack as ls, numpy as np, tempfile
    >>> project = ls.Project.init(tempfile.mkdtemp(), name="doc", tracking={"capture_environment": False})
    >>> with ls.start_run(project=project) as run:
    ...     logged = run.log_model(lambda x: x.sum(axis=1), "model", example=np.ones((2, 3)))
    >>> version = ls.register_model(run.id, "model", name="summer", alias="champion")
    >>> model = ls.load_model("summer@champion")
    >>> model.name, model.version, model.flavor
    ('summer', 1, 'python')
    >>> model.predict(np.array([[1, 2, 3]]))
    array([6.])
    >>> project.close()
    """

    def __init__(
        self,
        predictor: Predictor,
        manifest: dict[str, Any],
        digest: str,
        name: str | None = None,
        version: int | None = None,
    ) -> None:
        self._predictor = predictor
        self.manifest = manifest
        self.digest = digest
        self.name = name
        self.version = version
        self.flavor: str = manifest["flavor"]
        self.model_class: str = manifest["model_class"]
        self.signature: Signature | None = Signature.from_dict(manifest.get("signature"))

    @property
    def features(self) -> str | tuple[str, ...] | None:
        """What the model reads from the feature store (a service name or refs), as logged; None if nothing."""
        features = self.manifest.get("features")
        return tuple(features) if isinstance(features, list) else features

    @property
    def raw(self) -> Any:
        """The underlying library object (estimator, booster, session, function)."""
        return self._predictor.raw

    @property
    def has_predict_proba(self) -> bool:
        return hasattr(self._predictor, "predict_proba")

    def predict(self, data: Any) -> Any:
        """Predictions for `data`, after checking it against the signature."""
        return self._predictor.predict(self._prepare(data))

    def predict_proba(self, data: Any) -> Any:
        """Class probabilities, for models that have them."""
        method = getattr(self._predictor, "predict_proba", None)
        if method is None:
            raise ValidationError(
                f"model {self._label()} ({self.flavor} flavor, {self.model_class}) has no predict_proba; "
                "call predict, or log a classifier that has predict_proba"
            )
        return method(self._prepare(data))

    def _prepare(self, data: Any) -> Any:
        return data if self.signature is None else check_input(self.signature.inputs, data)

    def _label(self) -> str:
        if self.name is None:
            return self.digest[:12]
        return f"{self.name}/{self.version}" if self.version is not None else self.name

    def __repr__(self) -> str:
        return f"LoadedModel({self._label()!r}, flavor={self.flavor!r}, model_class={self.model_class!r})"
