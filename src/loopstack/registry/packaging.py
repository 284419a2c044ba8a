"""Model packages: a flavor's files plus a manifest, all stored by sha256.

Saving: the flavor writes its files into a temporary folder; each file is
stored content-addressed; a manifest (flavor, model class, file -> digest,
signature, library versions) is stored the same way, and the run's artifact
points at the manifest's digest. The manifest digest therefore pins every
byte of the model, and a registered version only needs to remember it.

Loading: the manifest and then every file are read through
`ArtifactStore.get_bytes`, which checks each sha256, and only when all of
them check out does the flavor see the bytes. A tampered or truncated file
raises `IntegrityError` before anything is unpickled.
"""

from __future__ import annotations

import json
import platform
import re
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopstack.core.errors import NotFoundError, ValidationError
from loopstack.registry.checks import check_input
from loopstack.registry.entities import LoggedModel
from loopstack.registry.flavors import detect_flavor, get_flavor
from loopstack.registry.flavors.base import Flavor, Predictor, qualified_name
from loopstack.registry.signature import Signature, infer_schema

if TYPE_CHECKING:
    from loopstack.core.artifacts import ArtifactStore
    from loopstack.tracking import ActiveRun

MANIFEST_FORMAT = 1
MODEL_KIND = "model"
_ARTIFACT_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-./]{0,249}\Z")


def log_model(
    run: ActiveRun, model: Any, name: str = "model", example: Any = None, flavor: str | None = None,
    features: str | Sequence[str] | None = None,
) -> LoggedModel:
    """Save `model` with its signature as the artifact `name` of `run`.

    The saved package is loaded back once and, given an `example`, predicts
    on it: that both records the output schema and proves the package loads
    before anyone depends on it. `features` names what the model reads from
    the feature store (a feature service, or ``"view:feature"`` references):
    a server then answers requests that send entity keys instead of inputs.
    """
    if not isinstance(name, str) or not _ARTIFACT_PATH.match(name) or ".." in name.split("/"):
        raise ValidationError(
            f"invalid model artifact path {name!r}: use letters, digits, '_', '-', '.', '/', e.g. 'model'"
        )
    features = check_features(features)
    chosen = get_flavor(flavor) if flavor is not None else detect_flavor(model)
    store = run.store.project.artifacts
    with tempfile.TemporaryDirectory(prefix="loopstack-model-") as folder:
        directory = Path(folder)
        options = chosen.save(model, directory)
        saved = {
            path.relative_to(directory).as_posix(): path for path in sorted(directory.rglob("*")) if path.is_file()
        }
        signature = _signature(chosen, {rel: path.read_bytes() for rel, path in saved.items()}, options, example)
        files = {rel: store.put_file(path) for rel, path in saved.items()}
    manifest = {
        "format": MANIFEST_FORMAT,
        "flavor": chosen.name,
        "model_class": qualified_name(model),
        "options": options,
        "files": files,
        "signature": None if signature is None else signature.to_dict(),
        "versions": _versions(chosen),
        "run_id": run.id,
        "created_at": time.time(),
        **({"features": features} if features is not None else {}),
    }
    payload = json.dumps(manifest, sort_keys=True, indent=1).encode()
    digest = store.put_bytes(payload)
    run.store.record_artifact(run.id, name, digest, len(payload), MODEL_KIND)
    return LoggedModel(run.id, name, digest, chosen.name, manifest["model_class"], signature, files)


def check_features(features: Any) -> str | list[str] | None:
    """A feature service name, or a list of ``"view:feature"`` references; anything else is a ValidationError.

    Examples
    --------
    >>> check_features(("driver_stats:trips", "driver_stats:conv_rate"))
    ['driver_stats:trips', 'driver_stats:conv_rate']
    >>> check_features("eta_service")
    'eta_service'
    """
    if features is None:
        return None
    if isinstance(features, str):
        if not features.strip():
            raise ValidationError("features='' names no feature service; pass a service name or 'view:feature' refs")
        return features
    refs = list(features) if isinstance(features, Sequence) else None
    if not refs:
        raise ValidationError(f"features={features!r}: pass a feature service name or a non-empty list of "
                              "'view_name:feature_name' references, e.g. ['driver_stats:trips']")
    from loopstack.features import parse_ref  # the feature store's own rule, so both say the same

    for ref in refs:
        try:
            parse_ref(ref)
        except ValidationError as error:
            raise ValidationError(f"features={features!r}: {error}") from error
    return refs


def read_manifest(store: ArtifactStore, digest: str) -> dict[str, Any]:
    """The verified manifest stored under `digest`."""
    try:
        manifest = json.loads(store.get_bytes(digest))
    except (UnicodeDecodeError, json.JSONDecodeError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValidationError(f"artifact {digest} is not a loopstack model manifest; log the model with log_model")
    return manifest


def load_package(store: ArtifactStore, digest: str, compiled: bool = False) -> tuple[dict[str, Any], Predictor]:
    """The manifest and a predictor, every byte verified before the flavor sees any.

    With `compiled`, a package whose flavor saved a compiled form too (its
    options name the file under ``"compiled"``; the flavor then has
    ``load_compiled``) loads that, reading only its file.
    """
    manifest = read_manifest(store, digest)
    flavor = get_flavor(manifest["flavor"])
    options = manifest["options"]
    compiled_file = options.get("compiled") if compiled else None
    if compiled_file is not None:
        data = {compiled_file: store.get_bytes(manifest["files"][compiled_file])}
        return manifest, flavor.load_compiled(data, options)  # type: ignore[attr-defined]
    files = {rel: store.get_bytes(file_digest) for rel, file_digest in manifest["files"].items()}
    return manifest, flavor.load(files, options)


def model_digest(tracking: Any, run_id: str, artifact_path: str) -> str:
    """The manifest digest of the model artifact `artifact_path` of a run (`tracking`: a TrackingStore)."""
    artifacts = tracking.list_artifacts(run_id)
    for artifact in artifacts:
        if artifact["path"] == artifact_path:
            if artifact["kind"] != MODEL_KIND:
                raise ValidationError(
                    f"artifact {artifact_path!r} of run {run_id} is a {artifact['kind']}, not a model; "
                    "log models with log_model"
                )
            return str(artifact["digest"])
    if not artifacts:  # "run abc has no model ...; its models: none" for a run that does not exist
        tracking.get_run_info(run_id)  # raises NotFoundError: no run with that id
    models = [a["path"] for a in artifacts if a["kind"] == MODEL_KIND]
    raise NotFoundError(f"run {run_id} has no model at {artifact_path!r}; its models: {models or 'none'}")


def _signature(flavor: Flavor, files: dict[str, bytes], options: dict[str, Any], example: Any) -> Signature | None:
    if example is None:
        return None
    inputs = infer_schema(example)
    predictor = flavor.load(files, options)
    output = predictor.predict(check_input(inputs, example))
    try:
        outputs = infer_schema(output)
    except ValidationError:  # e.g. a function returning a scalar: the input schema is what gets enforced
        outputs = None
    return Signature(inputs, outputs)


def _versions(flavor: Flavor) -> dict[str, Any]:
    import loopstack

    libraries = {}
    for distribution in flavor.libraries:
        try:
            libraries[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            libraries[distribution] = None
    return {"loopstack": loopstack.__version__, "python": platform.python_version(), "libraries": libraries}
