"""Answer locate broadcasts from the in-memory ObjectIndex; answer pings with a heartbeat.

Every locate gets a reply, empty when this server holds no shard, so the api server can stop
waiting once all live data servers have answered (BOOK W1).
"""
from __future__ import annotations

import logging

from data_server import heartbeat
from data_server.faults import paused
from data_server.index import ObjectIndex
from lib.config import Config
from lib.errors import InvalidHash
from lib.faults.engine import FaultEngine
from lib.hashing import unquote_hash, validate_hash
from lib.messages import LocateReply, LocateRequest, MalformedMessage
from lib.rabbitmq import Bus, Message

log = logging.getLogger(__name__)


def install(bus: Bus, config: Config, index: ObjectIndex,
            faults: FaultEngine | None = None) -> None:
    def on_request(message: Message) -> None:
        try:
            request = LocateRequest.from_json(message.body)
            if request.ping:
                heartbeat.announce(bus, config, faults=faults)
                return
            hash_ = validate_hash(unquote_hash(request.quoted_hash))
        except (MalformedMessage, InvalidHash) as exc:
            log.warning("dropped locate request: %s", exc)
            return
        if not message.reply_to:
            log.warning("dropped locate request without reply_to")
            return
        if faults is not None and faults.locate and paused(faults, "locate"):
            return
        reply = LocateReply(config.listen_address, index.ids(hash_))
        bus.publish("", message.reply_to, reply.to_json(), correlation_id=message.correlation_id)

    bus.subscribe(config.data_exchange, on_request)
