"""Run a WSGI app factory under gunicorn, the way every Tessera server starts.

``python -m data_server`` / ``python -m api_server`` call :func:`run`.  No ``--preload``: the
factory runs inside each worker after fork, so the RabbitMQ thread and other background
threads belong to the worker.  A worker that exits calls the app's stop hook
(``app.extensions["tessera.stop"]``), which for a data server announces its departure.

Before forking, the master gives the server a fresh metrics directory (``lib/metrics.py``:
every worker's series are summed at ``/metrics``) and removes it when it exits.
"""
from __future__ import annotations

from collections.abc import Callable

from gunicorn.app.base import BaseApplication
from gunicorn.config import KNOWN_SETTINGS
from gunicorn.glogging import Logger

from lib import logs, metrics
from lib.config import Config
from lib.pacing import paced_worker

#: Seconds a stopping server lets requests in flight finish.
GRACEFUL_TIMEOUT = 20
#: gunicorn >= 25.1 opens one control socket per user by default; many servers would collide.
_HAS_CONTROL_SOCKET = any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS)


def configure_logging(config: Config) -> None:
    logs.configure(config.log_level, config.log_format, config.listen_address,
                   f"%(asctime)s {config.listen_address} %(process)d %(name)s "
                   f"%(levelname)s %(request_id)s %(message)s")


def _worker_exit(_server, worker) -> None:
    metrics.worker_exited(worker.pid)
    app = getattr(worker, "wsgi", None)
    stop = getattr(app, "extensions", {}).get("tessera.stop")
    if stop is not None:
        stop()


class _Logger(Logger):
    """gunicorn's own lines in the format of ours (LOG_FORMAT)."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        logs.adopt(self.error_log)


class _Gunicorn(BaseApplication):
    def __init__(self, factory: Callable[[], object], options: dict):
        self._factory = factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self):
        return self._factory()


def run(factory: Callable[[Config], object], config: Config, name: str) -> None:
    """Serve ``factory(config)`` on ``config.listen_address`` until SIGTERM/SIGINT."""
    configure_logging(config)
    metrics.use_multiprocess_dir(config.metrics_dir)      # removed when this process exits

    def post_worker_init(worker) -> None:
        configure_logging(config)
        ready = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("tessera.ready")
        if ready is not None:
            ready()             # before the worker accepts a connection (issue 11.2)

    _Gunicorn(lambda: factory(config), {
        "bind": [config.listen_address] + ([config.s3_listen_address]
                                           if name == "api_server" and
                                           config.s3_listen_address else []),
        "workers": config.workers,
        # Slow clients hold no thread while sending a head; api servers' bodies keep a pace.
        "worker_class": paced_worker(config.client_timeout, config.client_min_rate
                                     if name == "api_server" else 0),
        "threads": config.threads,
        "timeout": 60,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "keepalive": 30,
        "proc_name": f"{name}-{config.listen_address}",
        "accesslog": None,
        "errorlog": "-",
        "loglevel": config.log_level,
        "post_worker_init": post_worker_init,
        "logger_class": _Logger,
        "worker_exit": _worker_exit,
        **({"control_socket_disable": True} if _HAS_CONTROL_SOCKET else {}),
    }).run()
