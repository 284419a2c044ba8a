"""Running the app under uvicorn (uvloop and httptools when installed), with a graceful stop.

The hot routes are answered by uvicorn's HTTP protocol itself (`loopstack.serving.protocol`);
everything else goes through the ASGI app.

On SIGTERM or SIGINT uvicorn stops accepting connections and waits up to
``drain_timeout_s`` for the requests already received; the app's lifespan then
writes the prediction log of what was answered, drains every batcher (up to
30 s more, or the model's ``timeout_s`` when longer: a prediction request still
queued then is answered, not cancelled; one still unfinished after that gets a
503 to retry) and flushes the log again before the process exits, without
waiting for a model stuck in predict. Other requests still running after ``drain_timeout_s`` are
cancelled, as uvicorn does. Access logging is off:
at thousands of requests a second it would cost more than the predict. Once
the models are loaded, the start-up heap is frozen out of the garbage
collector (`loopstack.serving.heap`).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterable
from typing import Any

from loopstack.core.errors import ConfigError
from loopstack.serving.config import ModelSpec, ServerSettings
from loopstack.serving.models import Loader
from loopstack.serving.repository import Resolver
from loopstack.serving.threads import limit_process_threads


def serve(
    models: Iterable[ModelSpec],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    settings: ServerSettings | None = None,
    loader: Loader | None = None,
    resolver: Resolver | None = None,
    log_level: str = "warning",
    drain_timeout_s: float = 30.0,
    feature_store: Any = None,
    deployments: Any = None,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Serve `models` (and the endpoints of `deployments`) over HTTP until SIGTERM/SIGINT, then drain and exit.

    `on_started` is called once the models are loaded and the port is bound: a "serving on" line
    printed there is never followed by a start-up error.

    Examples
    --------
    >>> from loopstack.serving import ModelSpec, serve
    >>> # serve([ModelSpec.parse("fraud@champion")], port=8080)   # blocks until SIGTERM
    """
    from loopstack.serving.app import create_app

    _check_address(host, port)
    settings = settings or ServerSettings()
    limit_process_threads(settings.threads())
    app = create_app(models, settings, loader=loader, resolver=resolver, feature_store=feature_store,
                     deployments=deployments)
    app.state.server.settle_heap = True
    config = uvicorn_config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=int(drain_timeout_s))
    _server(config, on_started).run()


def _server(config: Any, on_started: Callable[[], None] | None) -> Any:
    """uvicorn's server, calling `on_started` after its start-up succeeded (it exits on a failed one)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_started is not None:
                on_started()

    return Server(config)


def uvicorn_config(app: Any, **overrides: Any) -> Any:
    """uvicorn's configuration for `app`, as `serve` runs it: the hot routes answered by the HTTP protocol
    itself (`loopstack.serving.protocol`), no access log, no proxy-header rewrite, a deep backlog."""
    import uvicorn

    from loopstack.serving.protocol import hot_protocol

    settings: dict[str, Any] = {
        "loop": "auto",
        "http": hot_protocol(app),
        "lifespan": "on",
        "log_level": "warning",
        "access_log": False,
        "proxy_headers": False,  # the app reads neither the client address nor the scheme: skip the per-request rewrite
        "backlog": 4096,
        "timeout_keep_alive": 30,
    }
    settings.update(overrides)
    return uvicorn.Config(app, **settings)


def _check_address(host: str, port: int) -> None:
    """Fail in one line naming the host when it does not resolve (uvicorn's message names neither)."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ConfigError(f"cannot listen on host {host!r}: {error.strerror}; pass an address of this machine, "
                          "e.g. 127.0.0.1 or 0.0.0.0") from None
    _check_port(host, port)


def _check_port(host: str, port: int) -> None:
    """Fail in one line when the port cannot be bound, before the models load: uvicorn would log its raw
    ``[Errno 98] ... address already in use`` and exit 3. The probe binds as uvicorn does (SO_REUSEADDR)."""
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:  # other failures (a disabled address family...) are uvicorn's to judge
                if error.errno == errno.EADDRINUSE:
                    raise ConfigError(f"port {port} is in use; pick another with --port") from None
