"""``python -m scripts.worker``: run the deferred tasks of the durable task queue.

Tasks (``lib/tasks.py``) come from the api servers (shard rebuilds after a PUT below full width
or a degraded GET, "object stored" events) and from ``scripts.delete_old_metadata`` (garbage
collection of content no version references any more); ``lib/taskrunner.py`` runs them.  One
task at a time, acknowledged only once it is done, so a worker killed mid-task loses nothing:
the broker hands the task to the next worker.  SIGTERM (or Ctrl-C) lets the task in hand
finish, then the worker exits.  Any number of workers may share a queue.

With WORKER_STATUS_ADDRESS set, the worker answers ``/metrics`` (queue depth, dead letters,
live data servers, repairs) and ``/health`` (the broker) there (``lib/statusserver.py``).

``--list-dead`` prints the tasks parked in the dead-letter queue, ``--requeue-dead`` gives
them a fresh set of attempts.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading

from lib import metrics
from lib.config import Config
from lib.collector import collect_hash
from lib.membership import ClusterView
from lib.objects.sweeper import Sweeper
from lib.rabbitmq import BrokerError, QueueClient
from lib.statusserver import StatusServer
from lib.taskrunner import TaskRunner
from lib.tasks import TaskQueues
from scripts import _tool

log = logging.getLogger("scripts.worker")

RECONNECT_DELAY_MIN = 0.2
RECONNECT_DELAY_MAX = 5.0


def _parser():
    parser = _tool.parser("scripts.worker",
                          "Run the tasks of the durable task queue (TASK_QUEUE) until SIGTERM.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--list-dead", action="store_true",
                       help="print the tasks in the dead-letter queue (leaving them there) "
                            "and exit")
    group.add_argument("--requeue-dead", action="store_true",
                       help="move the dead-letter queue's tasks back to the task queue with "
                            "fresh attempts, and exit")
    return parser


def _dead_letters(config: Config, queues: TaskQueues, requeue: bool) -> int:
    with QueueClient(config.rabbitmq_server, "worker-dead-letters") as client:
        for name, arguments in queues.declarations():
            client.declare(name, arguments)
        if requeue:
            revived = []

            def revive(body: bytes):
                out = queues.revive(body)
                revived.extend(m for m in out if m.queue == queues.name)
                return out

            taken = client.take(queues.dead, revive)
            print(f"{len(revived)} task(s) moved from {queues.dead} back to {queues.name}; "
                  f"{taken - len(revived)} malformed one(s) left there")
            return _tool.EXIT_OK
        bodies = client.peek(queues.dead)
    for body in bodies:
        try:
            print(json.dumps(json.loads(body), sort_keys=True))
        except ValueError:
            print(repr(body))
    print(f"{len(bodies)} task(s) in {queues.dead}")
    return _tool.EXIT_OK


def _queue_counts(config: Config, queues: TaskQueues) -> dict[str, tuple[int, int] | None]:
    """(messages, consumers) of the task queue and the dead-letter queue, asked now."""
    with QueueClient(config.rabbitmq_server, "worker-status") as client:
        return {"tasks": client.counts(queues.name), "dead": client.counts(queues.dead)}


def _collectors(config: Config, queues: TaskQueues, cluster: ClusterView) -> list:
    """What the worker's /metrics computes when scraped."""
    def families():
        yield metrics.gauge("tessera_live_data_servers", "Data servers this process heard "
                            "from lately.", len(cluster.registry.live()))
        try:
            counts = _queue_counts(config, queues)
        except BrokerError:
            return
        for key, name, text in (("tasks", "tessera_task_queue_depth", "Tasks waiting."),
                                ("dead", "tessera_task_dead_letters", "Tasks parked in the "
                                 "dead-letter queue.")):
            if counts[key] is not None:
                yield metrics.gauge(name, text, counts[key][0])

    return [metrics.Snapshot(families)]


def _status(config: Config, queues: TaskQueues, cluster: ClusterView) -> StatusServer:
    return StatusServer(
        config.worker_status_address,
        {"rabbitmq": lambda: _queue_counts(config, queues)["tasks"] is not None},
        {"role": "worker", "address": config.listen_address, "task_queue": queues.name},
        _collectors(config, queues, cluster))


def _serve(config: Config, queues: TaskQueues, stop: threading.Event) -> int:
    metadata = _tool.open_metadata(config)
    status = None
    try:
        with ClusterView(config, f"worker-{os.getpid()}") as cluster:
            if config.worker_status_address:
                status = _status(config, queues, cluster).start()
            live = cluster.wait_for_data_servers(1)     # tasks that find too few retry
            log.info("%d live data server(s): %s", len(live), ", ".join(live))
            runner = TaskRunner(config, metadata, cluster)
            sweeper = Sweeper(metadata, lambda hash_: collect_hash(
                metadata, cluster.locator, cluster.client, hash_, 0.0),
                config.gc_grace, config.multipart_ttl)
            threading.Thread(target=sweeper.run, args=(config.gc_interval, stop),
                             name="sweeper", daemon=True).start()
            delay = RECONNECT_DELAY_MIN
            while not stop.is_set():
                try:
                    with QueueClient(config.rabbitmq_server, "worker") as client:
                        for name, arguments in queues.declarations():
                            client.declare(name, arguments)
                        log.info("consuming %s (max %d attempts, dead letters in %s)",
                                 queues.name, queues.max_attempts, queues.dead)
                        delay = RECONNECT_DELAY_MIN
                        client.consume(queues.name,
                                       lambda body, _redelivered: queues.process(body,
                                                                                 runner.run),
                                       stop)
                except BrokerError as exc:
                    if stop.is_set():
                        break
                    log.warning("%s; reconnecting in %.1fs", exc, delay)
                    stop.wait(delay)
                    delay = min(delay * 2, RECONNECT_DELAY_MAX)
    finally:
        if status is not None:
            status.close()
        metadata.close()
    print("worker stopped", flush=True)
    return _tool.EXIT_OK


def _run(config: Config, args) -> int:
    queues = TaskQueues.from_config(config)
    if args.list_dead or args.requeue_dead:
        return _dead_letters(config, queues, args.requeue_dead)
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        log.info("signal %d: finishing the task in hand, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return _serve(config, queues, stop)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _tool.run(lambda config: _run(config, args))


if __name__ == "__main__":
    sys.exit(main())
