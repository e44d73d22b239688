"""The only pika import: one long-lived AMQP connection per process role, in its own thread.

pika's BlockingConnection is not thread-safe, so a :class:`Bus` owns its connection inside one
daemon thread.  That thread declares the fanout exchanges, one exclusive server-named queue per
:class:`Subscription` (gone when the connection closes: no leaked queues, BOOK W24), consumes
them, runs periodic timers, and reconnects with backoff when the broker goes away.  Other
threads publish through :meth:`Bus.publish`, which hands the work to the connection's thread.
A handler that raises is logged; the message is dropped and the bus keeps running.

Work that must not be lost goes through durable queues instead: :class:`QueueClient` is a
blocking connection owned by one thread (the task worker, a maintenance script) that publishes
persistent messages with publisher confirms and consumes with manual acknowledgement, one
message at a time, acknowledging only after the handler finished.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout

import pika
import pika.exceptions

log = logging.getLogger(__name__)

RECONNECT_DELAY_MIN = 0.2
RECONNECT_DELAY_MAX = 3.0
_POLL = 0.25
#: Seconds between checks of how many consumers a declared durable queue has.
QUEUE_CHECK_INTERVAL = 5.0


@dataclasses.dataclass(frozen=True)
class Message:
    body: bytes
    reply_to: str | None
    correlation_id: str | None


@dataclasses.dataclass
class Subscription:
    """An exclusive queue bound to ``exchange`` (or a private reply queue when None)."""

    exchange: str | None
    handler: Callable[[Message], None]
    queue: str | None = None


@dataclasses.dataclass
class Timer:
    interval: float
    callback: Callable[[], None]
    due: float = 0.0


class Bus:
    """One AMQP connection, its subscriptions and timers, in a background thread."""

    def __init__(self, url: str, name: str, exchanges: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.monotonic):
        self._params = pika.URLParameters(url)
        self._params.connection_attempts = 1
        self._params.socket_timeout = 5
        self._params.blocked_connection_timeout = 30
        self._name = name
        self._exchanges = exchanges
        self._clock = clock
        self._subscriptions: list[Subscription] = []
        self._timers: list[Timer] = []
        self._on_connect: list[Callable[[], None]] = []
        self._on_stop: list[Callable[[], None]] = []
        self._queues: dict[str, int | None] = {}
        self._connection: pika.BlockingConnection | None = None
        self._channel = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.connected = threading.Event()

    # -- configuration (before start) -------------------------------------------------------
    def subscribe(self, exchange: str | None, handler: Callable[[Message], None]) -> Subscription:
        sub = Subscription(exchange, handler)
        self._subscriptions.append(sub)
        return sub

    def watch_queue(self, name: str, check_interval: float = QUEUE_CHECK_INTERVAL) -> None:
        """Check at connect and every ``check_interval`` seconds whether the durable queue
        ``name`` exists and how many consumers it has (:meth:`queue_consumers`).

        Only looked at, never created: the queue's consumers declare it (the task worker),
        so a process that merely publishes leaves no durable state behind, and a message
        is not kept for a consumer that never ran.
        """
        self._queues[name] = None
        self.every(check_interval, lambda: self._check_queue(name))

    def queue_consumers(self, name: str) -> int | None:
        """Consumers of a watched queue at the last check; None when it does not exist or
        the bus is not connected."""
        return self._queues.get(name) if self.connected.is_set() else None

    def _check_queue(self, name: str) -> None:
        if self._connection is None:
            return
        channel = self._connection.channel()      # a 404 closes the channel it happens on
        try:
            result = channel.queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            self._queues[name] = None
            return
        self._queues[name] = result.method.consumer_count
        channel.close()

    def every(self, interval: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` in the bus thread every ``interval`` seconds, first at connect."""
        self._timers.append(Timer(interval, callback))

    def on_connect(self, callback: Callable[[], None]) -> None:
        self._on_connect.append(callback)

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run in the bus thread just before a clean close (e.g. announce departure)."""
        self._on_stop.append(callback)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"bus-{self._name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- publishing (any thread) -------------------------------------------------------------
    def publish(self, exchange: str, routing_key: str, body: bytes, *,
                reply_to: str | None = None, correlation_id: str | None = None,
                persistent: bool = False) -> bool:
        """Send a message; False when not connected (the caller decides what that means).

        :param persistent: written to disk by the broker (delivery mode 2), for durable queues.
        """
        connection = self._connection
        if connection is None or not self.connected.is_set():
            return False
        props = pika.BasicProperties(reply_to=reply_to, correlation_id=correlation_id,
                                     content_type="application/json",
                                     delivery_mode=2 if persistent else None)

        def send() -> None:
            if self._channel is not None and self._channel.is_open:
                self._channel.basic_publish(exchange, routing_key, body, props)

        if threading.current_thread() is self._thread:
            send()
            return True
        try:
            connection.add_callback_threadsafe(send)
        except (pika.exceptions.AMQPError, RuntimeError) as exc:
            log.warning("%s: publish to %r failed: %s", self._name, exchange, exc)
            return False
        return True

    def queue_name(self, sub: Subscription) -> str | None:
        return sub.queue if self.connected.is_set() else None

    # -- the bus thread ----------------------------------------------------------------------
    def _run(self) -> None:
        delay = RECONNECT_DELAY_MIN
        while not self._stopping.is_set():
            try:
                self._connect()
                delay = RECONNECT_DELAY_MIN
                self._serve()
            except (pika.exceptions.AMQPError, OSError) as exc:
                if self._stopping.is_set():
                    break
                log.warning("%s: RabbitMQ connection lost (%s); reconnecting in %.1fs",
                            self._name, exc or type(exc).__name__, delay)
            except Exception:
                log.exception("%s: unexpected error in the RabbitMQ thread", self._name)
            finally:
                self._disconnect()
            self._stopping.wait(delay)
            delay = min(delay * 2, RECONNECT_DELAY_MAX)

    def _connect(self) -> None:
        self._connection = pika.BlockingConnection(self._params)
        channel = self._connection.channel()
        for exchange in self._exchanges:
            channel.exchange_declare(exchange, exchange_type="fanout")
        for sub in self._subscriptions:
            result = channel.queue_declare("", exclusive=True, auto_delete=True)
            sub.queue = result.method.queue
            if sub.exchange is not None:
                channel.queue_bind(sub.queue, sub.exchange)
            channel.basic_consume(sub.queue, self._dispatcher(sub), auto_ack=True)
        self._channel = channel
        self.connected.set()
        log.info("%s: connected to RabbitMQ", self._name)
        for callback in self._on_connect:
            callback()
        now = self._clock()
        for timer in self._timers:
            timer.due = now

    def _dispatcher(self, sub: Subscription):
        def dispatch(_channel, _method, properties, body: bytes) -> None:
            try:
                sub.handler(Message(body, properties.reply_to, properties.correlation_id))
            except Exception:
                log.exception("%s: dropped a message on %s: %r",
                              self._name, sub.exchange or "reply queue", body[:200])
        return dispatch

    def _serve(self) -> None:
        assert self._connection is not None
        while not self._stopping.is_set():
            now = self._clock()
            for timer in self._timers:
                if now >= timer.due:
                    timer.due = now + timer.interval
                    try:
                        timer.callback()
                    except (pika.exceptions.AMQPError, OSError):
                        raise
                    except Exception:
                        log.exception("%s: timer callback failed", self._name)
            self._connection.process_data_events(time_limit=_POLL)
        for callback in self._on_stop:
            try:
                callback()
            except Exception:
                log.exception("%s: stop callback failed", self._name)
        self._connection.process_data_events(time_limit=0)

    def _disconnect(self) -> None:
        self.connected.clear()
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:   # already broken: nothing left to release
                pass


def delete_exchanges(url: str, names: list[str]) -> None:
    """Remove exchanges a test or benchmark run declared for itself."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in names:
            channel.exchange_delete(name)
    finally:
        connection.close()


def delete_queues(url: str, names: list[str]) -> None:
    """Remove durable queues a test or benchmark run declared for itself (missing ones are
    fine)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)
    finally:
        connection.close()


def check_broker(url: str) -> None:
    """Open and close a connection; raises when the broker cannot be reached."""
    pika.BlockingConnection(pika.URLParameters(url)).close()


# -- durable queues ---------------------------------------------------------------------------

class BrokerError(Exception):
    """RabbitMQ is unreachable, or refused or lost a message; callers need not know pika."""


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """A persistent message a handler wants published (before its own message is acked)."""

    queue: str
    body: bytes
    #: Seconds the broker keeps the message in ``queue`` before it expires (and is
    #: dead-lettered, if the queue says where to); None: no expiry.
    expiration: float | None = None


#: Runs one message (body, redelivered) and returns what to publish before acking it.
Handler = Callable[[bytes, bool], "list[Outgoing]"]

_BROKER_ERRORS = (pika.exceptions.AMQPError, OSError)


class QueueClient:
    """One blocking connection and confirming channel, used by a single thread."""

    def __init__(self, url: str, name: str):
        self._name = name
        #: Runs consumed tasks, one at a time, while this thread keeps the connection alive.
        self._helper: ThreadPoolExecutor | None = None
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        params.socket_timeout = 5
        params.blocked_connection_timeout = 30
        try:
            self._connection = pika.BlockingConnection(params)
            self._channel = self._open_channel()
        except _BROKER_ERRORS as exc:
            raise BrokerError(f"{name}: cannot connect to RabbitMQ: {exc!r}") from exc

    def _open_channel(self):
        channel = self._connection.channel()
        channel.confirm_delivery()
        return channel

    def __enter__(self) -> "QueueClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; messages delivered and not acked go back to their queue."""
        if self._helper is not None:
            self._helper.shutdown(wait=True)
        if self._connection.is_open:
            try:
                self._connection.close()
            except Exception:   # already broken: nothing left to release
                pass

    def declare(self, queue: str, arguments: dict | None = None) -> None:
        """Declare a durable queue (a no-op when it exists with the same arguments)."""
        try:
            self._channel.queue_declare(queue, durable=True, arguments=arguments)
        except _BROKER_ERRORS as exc:
            raise BrokerError(f"{self._name}: cannot declare queue {queue!r}: {exc!r}") from exc

    def publish(self, message: Outgoing) -> None:
        """Publish persistently and wait for the broker's confirm; raise if it is refused or
        routed nowhere (an undeclared queue would silently swallow it otherwise)."""
        expiration = (None if message.expiration is None
                      else str(max(0, int(message.expiration * 1000))))
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                     expiration=expiration)
        try:
            self._channel.basic_publish("", message.queue, message.body, props, mandatory=True)
        except _BROKER_ERRORS as exc:
            raise BrokerError(
                f"{self._name}: publish to {message.queue!r} failed: {exc!r}") from exc

    def counts(self, queue: str) -> tuple[int, int] | None:
        """(messages ready, consumers) of ``queue``, or None when it does not exist."""
        try:
            result = self._channel.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            self._channel = self._open_channel()      # a 404 closes the channel
            return None
        except _BROKER_ERRORS as exc:
            raise BrokerError(f"{self._name}: cannot inspect {queue!r}: {exc!r}") from exc
        return result.method.message_count, result.method.consumer_count

    def peek(self, queue: str) -> list[bytes]:
        """Every message in ``queue``, left in it (for an operator to inspect)."""
        bodies: list[bytes] = []
        try:
            last = None
            while True:
                method, _props, body = self._channel.basic_get(queue, auto_ack=False)
                if method is None:
                    break
                bodies.append(body)
                last = method.delivery_tag
            if last is not None:
                self._channel.basic_nack(last, multiple=True, requeue=True)
        except _BROKER_ERRORS as exc:
            raise BrokerError(f"{self._name}: cannot read {queue!r}: {exc!r}") from exc
        return bodies

    def take(self, queue: str, handle: Callable[[bytes], list[Outgoing]]) -> int:
        """Hand every message now in ``queue`` to ``handle``; publish what it returns (maybe
        back to ``queue``: it is not taken again), then ack the message.  Returns how many
        were taken."""
        taken = 0
        try:
            waiting = self._channel.queue_declare(queue, passive=True).method.message_count
            while taken < waiting:
                method, _props, body = self._channel.basic_get(queue, auto_ack=False)
                if method is None:
                    break
                for message in handle(body):
                    self.publish(message)
                self._channel.basic_ack(method.delivery_tag)
                taken += 1
        except _BROKER_ERRORS as exc:
            raise BrokerError(f"{self._name}: cannot take from {queue!r}: {exc!r}") from exc
        return taken

    def consume(self, queue: str, handle: Handler, stop: threading.Event,
                prefetch: int = 1) -> None:
        """Run ``handle`` on each message of ``queue`` until ``stop`` is set.

        The handler runs in a helper thread while this one keeps the connection alive
        (heartbeats), however long a task takes.  Its messages are published (confirmed)
        before the delivery is acked, so a crash at any point loses nothing: an unacked
        message is redelivered.  Once ``stop`` is set, the message in hand is finished and
        the method returns; anything prefetched but not started goes back to the queue when
        the connection closes.  Raises BrokerError when the connection is lost.
        """
        inbox: list[tuple[object, bytes]] = []
        try:
            self._channel.basic_qos(prefetch_count=prefetch)
            self._channel.basic_consume(
                queue, lambda _ch, method, _props, body: inbox.append((method, body)),
                auto_ack=False)
            while True:
                if not inbox:
                    if stop.is_set():
                        return
                    self._connection.process_data_events(time_limit=_POLL)
                    continue
                method, body = inbox.pop(0)
                outgoing = self._run_pumping(handle, body, method.redelivered)
                if outgoing is None:          # the handler itself broke: try again later
                    self._channel.basic_nack(method.delivery_tag, requeue=True)
                    stop.wait(1.0)
                    continue
                for message in outgoing:
                    self.publish(message)
                self._channel.basic_ack(method.delivery_tag)
        except _BROKER_ERRORS as exc:
            raise BrokerError(f"{self._name}: consuming {queue!r} failed: {exc!r}") from exc

    def _run_pumping(self, handle: Handler, body: bytes,
                     redelivered: bool) -> list[Outgoing] | None:
        """``handle(body, redelivered)`` on the helper thread, pumping heartbeats meanwhile;
        None when the handler raised."""
        if self._helper is None:
            self._helper = ThreadPoolExecutor(1, thread_name_prefix=f"{self._name}-task")
        future = self._helper.submit(handle, body, redelivered)
        try:
            while True:
                try:
                    return future.result(_POLL)
                except FutureTimeout:
                    self._connection.process_data_events(time_limit=0)     # heartbeats
                except Exception:
                    log.exception("%s: task handler failed on %r", self._name, body[:200])
                    return None
        finally:
            wait([future])         # never let a lost connection start the task twice here

    def delete(self, queues: list[str]) -> None:
        """Delete queues (missing ones are fine): tests and benchmarks clean up after
        themselves."""
        try:
            for queue in queues:
                self._channel.queue_delete(queue)
        except _BROKER_ERRORS as exc:
            raise BrokerError(f"{self._name}: cannot delete queues: {exc!r}") from exc
