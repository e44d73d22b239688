"""What the worker does with each task kind (the queue mechanics are in ``lib/tasks.py``).

* ``repair``: if a version still references the object, re-locate it, retire the copies that
  failed a read and rebuild what is missing (:func:`lib.rs.repair.repair_object`, the code the
  api server runs in process when the broker is away).  Fewer than DATA_SHARDS shards left
  is a failure: it is retried (a data server may be restarting) and dead-lettered at last.
  The repair log (``lib.objects.repairs.record_repair``) gets the repair once it finished:
  done, or failed on its last attempt (a retried one is still pending, in the queue).
* ``gc``: collect the object's shards into garbage/ if no version references it any more
  (:func:`lib.collector.collect_hash`).
* ``stored``: the "object stored" hook: logged, and POSTed as JSON to ``STORED_HOOK_URL``
  when that is set; a hook that does not answer 2xx fails the task, which is retried.
* ``prefetch``: store a key from its bucket's origin unless it is there
  (:func:`lib.objects.prefetch.run`, through an object layer of the worker's own); an origin
  failure is retried, a 404 is recorded and done.

Every handler is idempotent: a task may run twice (a worker killed after the work but before
its acknowledgement), never zero times.
"""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

from lib.collector import collect_hash
from lib.config import Config
from lib.membership import ClusterView
from lib.metadata import MetadataStore, Version
from lib.objects import ObjectLayer, prefetch
from lib.objects.erasure import ErasureContentStore
from lib.objects.origin import OriginLayer
from lib.objects.repairs import Repairs, record_repair
from lib.rs.repair import repair_object
from lib.tasks import PermanentFailure, Task, TaskPublisher, TaskQueues

log = logging.getLogger(__name__)

#: Who ran a repair, as the repair log says it.
WORKER = "worker"


class HookFailed(Exception):
    """The stored-event hook did not accept the event."""


class TaskRunner:
    def __init__(self, config: Config, metadata: MetadataStore, cluster: ClusterView):
        self._config = config
        self._metadata = metadata
        self._cluster = cluster
        self._origin_layer: OriginLayer | None = None

    def run(self, task: Task) -> None:
        handler = getattr(self, f"_run_{task.kind}", None)
        if handler is None:
            raise PermanentFailure(f"no handler for task kind {task.kind!r}")
        handler(task)

    def _run_repair(self, task: Task) -> None:
        if not self._metadata.has_hash(task.hash):
            log.info("repair %s: no version references it any more; nothing to do", task.hash)
            return
        cluster = self._cluster
        try:
            rebuilt = repair_object(cluster.client, cluster.registry, cluster.locator,
                                    task.hash, task.size, task.damaged)
        except Exception as exc:
            if task.attempt + 1 >= self._config.task_max_attempts:
                record_repair(self._metadata, task.hash, task.damaged,
                              f"{type(exc).__name__}: {exc}", WORKER)
            raise
        record_repair(self._metadata, task.hash, rebuilt, None, WORKER)
        log.info("repair %s: %s", task.hash,
                 f"rebuilt shards {sorted(rebuilt)}" if rebuilt else "nothing was missing")

    def _run_gc(self, task: Task) -> None:
        collect_hash(self._metadata, self._cluster.locator, self._cluster.client, task.hash,
                     task.grace)

    def _run_stored(self, task: Task) -> None:
        event = {"event": "stored", "name": task.name, "version": task.version,
                 "hash": task.hash, "size": task.size, "id": task.id}
        log.debug("stored %r version %d (%d bytes, %s)", task.name, task.version, task.size,
                  task.hash)
        url = self._config.stored_hook_url
        if url:
            post_json(url, event, self._config.http_timeout)


    def _run_prefetch(self, task: Task) -> None:
        last = task.attempt + 1 >= self._config.task_max_attempts
        prefetch.run(self._origins(), self._metadata, task, last)

    def _origins(self) -> OriginLayer:
        """The worker's own object layer with fetch on miss (made at the first prefetch)."""
        if self._origin_layer is None:
            c = self._cluster
            tasks = TaskPublisher(c.bus, TaskQueues.from_config(self._config),
                                  check_interval=self._config.heartbeat_interval)
            contents = ErasureContentStore(self._config, c.client, c.registry, c.locator,
                                           Repairs(c.client, c.registry, c.locator, tasks,
                                                   self._metadata, WORKER))

            def stored(v: Version) -> None:      # the same "object stored" event as a PUT's
                tasks.publish(Task.stored(v.key, v.number, v.hash, v.size, v.bucket,
                                          v.version_id))

            layer = ObjectLayer(self._metadata, contents, on_stored=stored)
            self._origin_layer = OriginLayer.from_config(layer, self._config)
        return self._origin_layer


def post_json(url: str, payload: dict, timeout: float) -> None:
    """POST ``payload`` as JSON; HookFailed unless the answer is 2xx."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise HookFailed(f"{url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise HookFailed(f"{url}: {exc}") from exc
