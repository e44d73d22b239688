"""Feed the DataServerRegistry from data servers' heartbeats and departure notices."""
from __future__ import annotations

import logging

from lib.config import Config
from lib.messages import Heartbeat, LocateRequest, MalformedMessage
from lib.rabbitmq import Bus, Message
from lib.registry import DataServerRegistry

log = logging.getLogger(__name__)


def install(bus: Bus, config: Config, registry: DataServerRegistry) -> None:
    """Track heartbeats; at every (re)connect ask data servers to announce themselves."""

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
