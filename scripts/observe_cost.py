"""What observing a request costs: CPU microseconds per request of ``lib.access.Observed``
(request id, metrics, access line) around a trivial WSGI app, less the bare app's.

Measured in process, because the cost is far below what a cluster's throughput can resolve
on a shared machine (the same workload moves 20-40% between runs, the cost is a few percent):
``scripts/bench.py --only observe`` runs this and divides by its own small PUT and GET CPU.
Run with this project's python; prints one JSON object:

* ``api_us``: an api server's request: metrics, and a JSON access line at INFO
  (``LOG_FORMAT=json``, the dearer format);
* ``data_us``: a data server's request: metrics, its access line at DEBUG (not written).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):           # run as a file: python scripts/observe_cost.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib import logs, metrics  # noqa: E402
from lib.access import Observed  # noqa: E402

CALLS = 5000
ROUNDS = 7
ENVIRON = {"REQUEST_METHOD": "GET", "PATH_INFO": "/objects/bench/small/0/1",
           "RAW_URI": "/objects/bench/small/0/1", "REMOTE_ADDR": "127.0.0.1",
           "SERVER_NAME": "127.0.2.1", "SERVER_PORT": "1"}


def _app(environ, start_response):
    environ["tessera.operation"] = "objects.get_object"
    start_response("200 OK", [("Content-Length", "4096")])
    return [b"x" * 4096]


def _start_response(_status, _headers, _exc_info=None):
    return None


def cpu_us(app) -> float:
    """CPU microseconds per request of ``app``: the least of ROUNDS rounds of CALLS (what
    a round costs undisturbed; the neighbours' load only ever adds)."""
    def call():
        body = app(dict(ENVIRON), _start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()

    for _ in range(CALLS // 10):
        call()
    rounds = []
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(CALLS):
            call()
        rounds.append((time.process_time() - started) / CALLS * 1e6)
    return min(rounds)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tessera-observe-") as root:
        metrics.use_multiprocess_dir(Path(root))
        logs.configure("info", "json", "127.0.2.1:1", "")
        handler = logging.getLogger().handlers[0]
        with open(os.devnull, "w") as sink:
            handler.setStream(sink)               # lines are formatted and written, to nowhere
            bare = cpu_us(_app)
            api = cpu_us(Observed(_app, "book")) - bare
            data = cpu_us(Observed(_app, "data", access_level=logging.DEBUG)) - bare
            handler.flush()
    print(json.dumps({"api_us": round(api, 2), "data_us": round(data, 2),
                      "bare_us": round(bare, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
