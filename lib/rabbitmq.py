"""The only pika import: one long-lived AMQP connection per process role, in its own thread.

pika's BlockingConnection is not thread-safe, so a :class:`Bus` owns its connection inside one
daemon thread.  That thread declares the fanout exchanges, one exclusive server-named queue per
:class:`Subscription` (gone when the connection closes: no leaked queues, BOOK W24), consumes
them, runs periodic timers, and reconnects with backoff when the broker goes away.  Other
threads publish through :meth:`Bus.publish`, which hands the work to the connection's thread.
A handler that raises is logged; the message is dropped and the bus keeps running.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import pika
import pika.exceptions

log = logging.getLogger(__name__)

RECONNECT_DELAY_MIN = 0.2
RECONNECT_DELAY_MAX = 3.0
_POLL = 0.25


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
                reply_to: str | None = None, correlation_id: str | None = None) -> bool:
        """Send a message; False when not connected (the caller decides what that means)."""
        connection = self._connection
        if connection is None or not self.connected.is_set():
            return False
        props = pika.BasicProperties(reply_to=reply_to, correlation_id=correlation_id,
                                     content_type="application/json")

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


def check_broker(url: str) -> None:
    """Open and close a connection; raises when the broker cannot be reached."""
    pika.BlockingConnection(pika.URLParameters(url)).close()
