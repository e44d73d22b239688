"""Who may use the web console: a browser that logged in with ``ADMIN_TOKEN``.

The login form trades the token for a session cookie (HttpOnly, SameSite=Strict, path
``/console/``) that is ``<expiry>.<nonce>.<mac>``: an HMAC-SHA256 under a key derived from
the cluster secret (``lib/secret.py``) and the admin token, so every api server accepts every
other's sessions and changing ``ADMIN_TOKEN`` ends them all.  Forms carry a CSRF token, the
HMAC of the session's nonce (the login form: of a nonce in a short-lived cookie of its own),
checked in constant time before anything is done.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from lib.config import Config
from lib.secret import cluster_secret

#: Seconds a console session lasts after login.
SESSION_TTL = 12 * 3600
#: Seconds a login form stays usable.
LOGIN_TTL = 3600
SESSION_COOKIE = "tessera_console"
LOGIN_COOKIE = "tessera_console_login"
COOKIE_PATH = "/console/"


def _key(config: Config, purpose: bytes) -> bytes:
    token = hashlib.sha256(config.admin_token.encode()).digest()
    return hmac.new(cluster_secret(config), b"tessera console " + purpose + b"\0" + token,
                    hashlib.sha256).digest()


def _mac(config: Config, purpose: bytes, message: str) -> str:
    return hmac.new(_key(config, purpose), message.encode(), hashlib.sha256).hexdigest()


def is_admin_token(config: Config, token: str) -> bool:
    """Whether ``token`` is the admin token (never when none is configured)."""
    return bool(config.admin_token) and hmac.compare_digest(token.encode(),
                                                            config.admin_token.encode())


def new_cookie(config: Config, ttl: float, purpose: bytes, now: float | None = None) -> str:
    """A fresh signed ``<expiry>.<nonce>.<mac>`` value."""
    expiry = int((time.time() if now is None else now) + ttl)
    message = f"{expiry}.{secrets.token_urlsafe(18)}"
    return f"{message}.{_mac(config, purpose, message)}"


def cookie_nonce(config: Config, value: str | None, purpose: bytes,
                 now: float | None = None) -> str | None:
    """The nonce of a signed, unexpired cookie value; None for anything else."""
    if not value or not config.admin_token:
        return None
    message, _, mac = value.rpartition(".")
    expiry, _, nonce = message.partition(".")
    if not expiry.isdigit() or not nonce:
        return None
    if not hmac.compare_digest(mac.encode(), _mac(config, purpose, message).encode()):
        return None
    if int(expiry) < (time.time() if now is None else now):
        return None
    return nonce


def new_session(config: Config) -> str:
    return new_cookie(config, SESSION_TTL, b"session")


def session_nonce(config: Config, value: str | None) -> str | None:
    return cookie_nonce(config, value, b"session")


def new_login(config: Config) -> str:
    return new_cookie(config, LOGIN_TTL, b"login")


def login_nonce(config: Config, value: str | None) -> str | None:
    return cookie_nonce(config, value, b"login")


def csrf_token(config: Config, nonce: str) -> str:
    """The CSRF token of the forms a session (or a login form) shows."""
    return _mac(config, b"csrf", nonce)


def check_csrf(config: Config, nonce: str | None, token: str | None) -> bool:
    return nonce is not None and token is not None and \
        hmac.compare_digest(token.encode(), csrf_token(config, nonce).encode())
