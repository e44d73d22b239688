"""Which data servers are alive, as heartbeats tell: for api servers, the worker and tools.

Api servers feed their registry with :func:`track_data_servers`; the task worker, the object
scanner and the cluster-wide orphan collector need the same view to locate and rebuild
shards.  :class:`ClusterView` bundles that view: a :class:`Bus` whose heartbeat subscription
feeds a :class:`DataServerRegistry`, a :class:`Locator` on top of it, and a
:class:`DataServerClient` to talk to the servers.
"""
from __future__ import annotations

import logging
import time

from lib.config import Config
from lib.locator import Locator
from lib.messages import Heartbeat, LocateRequest, MalformedMessage
from lib.objectstream import DataServerClient
from lib.rabbitmq import Bus, Message
from lib.registry import DataServerRegistry

log = logging.getLogger(__name__)

#: Seconds the set of live data servers must stay unchanged before a tool trusts it.
SETTLE = 0.5


def track_data_servers(bus: Bus, config: Config, registry: DataServerRegistry) -> None:
    """Feed ``registry`` from heartbeats and departures; at every (re)connect ask the data
    servers to announce themselves at once rather than at their next heartbeat."""

    def on_heartbeat(message: Message) -> None:
        try:
            beat = Heartbeat.from_json(message.body)
        except MalformedMessage as exc:
            log.warning("dropped heartbeat: %s", exc)
            return
        if beat.leaving:
            registry.forget(beat.addr, "it announced its departure")
        else:
            registry.seen(beat.addr)

    bus.subscribe(config.api_exchange, on_heartbeat)
    bus.on_connect(lambda: bus.publish(config.data_exchange, "",
                                       LocateRequest(ping=True).to_json()))


def wait_for_data_servers(bus: Bus, registry: DataServerRegistry, minimum: int,
                          timeout: float) -> list[str]:
    """Wait until ``bus`` is connected and ``registry``'s live set has stayed the same for
    :data:`SETTLE` seconds with at least ``minimum`` servers; return it (possibly short of
    ``minimum`` when ``timeout`` ran out)."""
    deadline = time.monotonic() + timeout
    bus.connected.wait(timeout)
    live = registry.live()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = registry.live()
        if now != live:
            live, stable_since = now, time.monotonic()
        elif len(live) >= minimum and time.monotonic() - stable_since >= SETTLE:
            break
    return live


class ClusterView:
    """A running bus, the registry it feeds, a locator and a data-server client."""

    def __init__(self, config: Config, name: str):
        self.config = config
        self.registry = DataServerRegistry(config.server_ttl)
        self.bus = Bus(config.rabbitmq_server, name,
                       exchanges=(config.api_exchange, config.data_exchange))
        track_data_servers(self.bus, config, self.registry)
        self.locator = Locator(self.bus, config, self.registry)
        self.client = DataServerClient.from_config(config)

    def start(self) -> "ClusterView":
        self.bus.start()
        return self

    def wait_for_data_servers(self, minimum: int = 1, timeout: float | None = None) -> list[str]:
        """Wait until connected and the live set has settled with at least ``minimum``
        servers; return it (possibly short of ``minimum`` when ``timeout`` ran out)."""
        timeout = 2 * self.config.heartbeat_interval + 2 if timeout is None else timeout
        return wait_for_data_servers(self.bus, self.registry, minimum, timeout)

    def close(self) -> None:
        self.bus.stop()

    def __enter__(self) -> "ClusterView":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
