"""Tell api servers this data server is alive (every HEARTBEAT_INTERVAL), or leaving."""
from __future__ import annotations

from lib.config import Config
from lib.messages import Heartbeat
from lib.rabbitmq import Bus


def announce(bus: Bus, config: Config, leaving: bool = False) -> None:
    bus.publish(config.api_exchange, "", Heartbeat(config.listen_address, leaving).to_json())


def install(bus: Bus, config: Config) -> None:
    bus.every(config.heartbeat_interval, lambda: announce(bus, config))
    bus.on_stop(lambda: announce(bus, config, leaving=True))
