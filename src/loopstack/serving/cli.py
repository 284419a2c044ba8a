"""`loopstack serve` and `loopstack predict`: the online server and file-to-file batch inference.

Mount both at the top level: ``serve`` -> ``loopstack.serving.cli:serve``,
``predict`` -> ``loopstack.serving.cli:predict``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from loopstack.serving.threads import limit_process_threads


def _project(ctx: click.Context):  # type: ignore[no-untyped-def]
    from loopstack.core.project import Project

    return Project.open(ctx.obj.get("project_path") if ctx.obj else None)


def batching_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The batching flags of `loopstack serve` (per model) and `loopstack deploy serve` (per variant)."""
    options = [
        click.option("--max-batch-size", default=64, show_default=True, type=int, help="Most rows per predict."),
        click.option("--max-wait-ms", default=2.0, show_default=True, type=float,
                     help="Longest a request waits for its batch to fill (a lone request never waits)."),
        click.option("--max-queue", default=2048, show_default=True, type=int, help="Queued rows before 503."),
        click.option("--inline-ms", default=1.0, show_default=True, type=float,
                     help="Predicts expected to take at most this long run on the event loop, not a thread "
                          "(0: never)."),
        click.option("--timeout", "timeout_s", default=10.0, show_default=True, type=float,
                     help="Per-request deadline (s)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@batching_options
@click.option("--threads", type=int, default=None, help="Math-library threads per predict (default: cores - 1).")
@click.option("--log-dir", default=None, help="Prediction log folder (default: .loopstack/logs; 'none' disables).")
@click.option("--refresh", "refresh_s", default=5.0, show_default=True, type=float,
              help="Seconds between alias checks; a moved alias swaps the new version in (0: never).")
@click.option("--features", default=None,
              help="Feature service (or comma-separated view:feature refs) read for entity-key requests "
                   "(default: the features each model was logged with, if any).")
@click.option("--gpu", default=None, help="GPU type held (price table name, e.g. L4): cost per 1,000 predictions.")
@click.option("--gpus", default=1, show_default=True, type=int, help="Cards held, with --gpu.")
@click.option("--native", is_flag=True,
              help="Serve the estimator itself where a compiled form was saved too (same answers, slower start).")
@click.pass_context
def serve(ctx: click.Context, models: tuple[str, ...], host: str, port: int, max_batch_size: int,
          max_wait_ms: float, max_queue: int, inline_ms: float, timeout_s: float, threads: int | None,
          log_dir: str | None, refresh_s: float, features: str | None, gpu: str | None, gpus: int,
          native: bool) -> None:
    """Serve registered MODELS (fraud@champion, fraud/3, or NAME=REF) over HTTP: native JSON and Open Inference v2."""
    from loopstack.serving.config import ModelSpec, ServerSettings

    with flags_named():
        settings = ServerSettings(predict_threads=threads, refresh_s=refresh_s, log_dir=None)
    limit_process_threads(settings.threads())  # before any math library loads
    from loopstack.registry.api import get_model_version, load_model
    from loopstack.serving.server import serve as run

    project = _project(ctx)
    if log_dir is None:
        log_dir = str(project.root / ".loopstack" / "logs")
    refs = None if features is None else (tuple(features.split(",")) if ":" in features else features)
    with flags_named():
        settings = ServerSettings(predict_threads=threads, refresh_s=refresh_s, gpu=gpu, gpus=gpus,
                                  log_dir=None if log_dir.lower() == "none" else log_dir)
        specs = [ModelSpec.parse(m, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
                                 inline_ms=inline_ms, timeout_s=timeout_s, features=refs) for m in models]
    # fail here, in one line, rather than in the server's start-up after the port is bound
    for spec in specs:
        _check_features(project, get_model_version(spec.ref, project=project), refs)
    banner = f"serving {', '.join(s.name for s in specs)} on http://{host}:{port}"
    run(specs, host=host, port=port, settings=settings, on_started=lambda: click.echo(banner, err=True),
        loader=lambda ref: load_model(ref, project=project, compiled=not native),
        resolver=lambda ref: str(get_model_version(ref, project=project).version),
        feature_store=project.feature_store)  # for --features, and for models logged with their features


# the settings' field names as the user typed them
FLAGS = {"predict_threads": "--threads", "timeout_s": "--timeout", "gpus": "--gpus", "refresh_s": "--refresh",
         "max_wait_ms": "--max-wait-ms", "max_batch_size": "--max-batch-size", "max_queue": "--max-queue",
         "inline_ms": "--inline-ms"}


@contextmanager
def flags_named() -> Iterator[None]:
    """Settings errors name the flag: ``--threads 0 must be ...``, not ``predict_threads=0 for 'server' ...``."""
    from loopstack.core.errors import ConfigError
    from loopstack.serving.config import SettingError

    try:
        yield
    except SettingError as error:
        if error.setting not in FLAGS:
            raise
        raise ConfigError(f"{FLAGS[error.setting]} {error.value!r} {error.rule}") from None


def _check_features(project: Any, version: Any, given: Any) -> None:
    """The features a model will read (--features, else what it was logged with) exist in the feature store."""
    from loopstack.core.errors import NotFoundError
    from loopstack.registry.packaging import read_manifest

    features = given if given is not None else read_manifest(project.artifacts, version.digest).get("features")
    if features is None:
        return
    try:
        project.feature_store.catalog.resolve(features)
    except NotFoundError as error:
        source = "--features" if given is not None else f"{version.ref} was logged with features={features!r}, but"
        raise NotFoundError(f"{source}: {error}") from None


@click.command()
@click.option("--model", "ref", required=True, help="Registry reference, e.g. fraud@champion or fraud/3.")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="Parquet file or folder of Parquet files.")
@click.option("--output", "output_path", required=True, type=click.Path(path_type=Path), help="Parquet file to write.")
@click.option("--chunk-rows", default=65_536, show_default=True, type=click.IntRange(1),
              help="Rows per predict and per checkpoint.")
@click.option("--keep", multiple=True, help="Input column to copy to the output (repeatable), e.g. an id.")
@click.option("--method", type=click.Choice(["auto", "predict", "predict_proba"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="Math-library threads (default: all cores).")
@click.option("--no-resume", is_flag=True, help="Start over instead of resuming from the last finished chunk.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def predict(ctx: click.Context, ref: str, input_path: Path, output_path: Path, chunk_rows: int, keep: tuple[str, ...],
            method: str, threads: int | None, no_resume: bool, quiet: bool) -> None:
    """Score a Parquet file with a registered model, in bounded memory, resuming after an interruption."""
    if threads is not None:
        limit_process_threads(threads)
    from loopstack.registry.api import load_model
    from loopstack.serving.batch import predict_file

    project = _project(ctx)
    model = load_model(ref, project=project)
    summary = predict_file(model, input_path, output_path, chunk_rows=chunk_rows, keep=list(keep), method=method,
                           resume=not no_resume, progress=not quiet)
    click.echo(f"wrote {summary.rows} rows to {output_path} ({summary.resumed_chunks} chunks resumed)", err=True)
