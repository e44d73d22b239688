"""Who may use the management API: the holder of ``ADMIN_TOKEN`` (``Authorization: Bearer``).

Without ``ADMIN_TOKEN`` the management API is closed (403 naming the setting): an operator
turns it on deliberately.  The comparison is constant-time.
"""
from __future__ import annotations

import hmac
from collections.abc import Mapping

from lib.config import Config


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    scheme, _, token = (headers.get("Authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_admin(config: Config, headers: Mapping[str, str]) -> tuple[int, str, str] | None:
    """None if the request carries admin credentials, else (status, code, message)."""
    if not config.admin_token:
        return 403, "AdminDisabled", "the management API is off: set ADMIN_TOKEN to use it"
    token = bearer(headers)
    if token is None:
        return 401, "Unauthorized", "admin credentials required: Authorization: Bearer <token>"
    if not hmac.compare_digest(token.encode(), config.admin_token.encode()):
        return 403, "Forbidden", "wrong admin token"
    return None
