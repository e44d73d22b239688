"""``python -m scripts.worker``: run the deferred tasks of the durable task queue.

Tasks (``lib/tasks.py``) come from the api servers (shard rebuilds after a PUT below full width
or a degraded GET, "object stored" events) and from ``scripts.delete_old_metadata`` (garbage
collection of content no version references any more); ``lib/taskrunner.py`` runs them.  One
task at a time, acknowledged only once it is done, so a worker killed mid-task loses nothing:
the broker hands the task to the next worker.  SIGTERM (or Ctrl-C) lets the task in hand
finish, then the worker exits.  Any number of workers may share a queue.

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

from lib.config import Config
from lib.collector import collect_hash
from lib.membership import ClusterView
from lib.objects.sweeper import Sweeper
from lib.rabbitmq import BrokerError, QueueClient
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


def _serve(config: Config, queues: TaskQueues, stop: threading.Event) -> int:
    metadata = _tool.open_metadata(config)
    try:
        with ClusterView(config, f"worker-{os.getpid()}") as cluster:
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
