"""Tell api servers this data server is alive (every HEARTBEAT_INTERVAL), or leaving."""
from __future__ import annotations

from data_server.faults import paused
from lib.config import Config
from lib.faults.engine import FaultEngine
from lib.messages import Heartbeat
from lib.rabbitmq import Bus


def announce(bus: Bus, config: Config, leaving: bool = False,
             faults: FaultEngine | None = None) -> None:
    """Send a heartbeat (unless a ``pause_heartbeat`` fault rule silences it)."""
    if faults is not None and not leaving and paused(faults, "heartbeat"):
        return
    bus.publish(config.api_exchange, "", Heartbeat(config.listen_address, leaving).to_json())


def install(bus: Bus, config: Config, faults: FaultEngine | None = None) -> None:
    bus.every(config.heartbeat_interval, lambda: announce(bus, config, faults=faults))
    bus.on_stop(lambda: announce(bus, config, leaving=True))
