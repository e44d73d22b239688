"""The console's login form (the admin token for a session cookie) and logout."""
from __future__ import annotations

import logging

from flask import g, make_response, redirect, render_template, request, url_for

from api_server.console import bp, config, safe_next, session

log = logging.getLogger(__name__)


def _set_cookie(response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=session.COOKIE_PATH, httponly=True,
                        samesite="Strict", secure=request.is_secure)


def _login_form(status: int = 200, message: str = ""):
    """The form, with a fresh login cookie whose nonce its CSRF token signs."""
    cfg = config()
    if not cfg.admin_token:
        return render_template("console/login.html", disabled=True), 403
    value = session.new_login(cfg)
    token = session.csrf_token(cfg, session.login_nonce(cfg, value))
    response = make_response(render_template(
        "console/login.html", login_csrf=token, message=message,
        next=safe_next(request.values.get("next"))), status)
    _set_cookie(response, session.LOGIN_COOKIE, value, session.LOGIN_TTL)
    return response


@bp.get("/login")
def login():
    if g.console_nonce is not None:
        return redirect(safe_next(request.args.get("next")), 303)
    return _login_form()


@bp.post("/login")
def post_login():
    cfg = config()
    if not cfg.admin_token:
        return _login_form()
    nonce = session.login_nonce(cfg, request.cookies.get(session.LOGIN_COOKIE))
    if not session.check_csrf(cfg, nonce, request.form.get("csrf")):
        return _login_form(403, "The login form expired: enter the token again.")
    if not session.is_admin_token(cfg, request.form.get("token", "")):
        log.warning("console: wrong admin token from %s", request.remote_addr)
        return _login_form(403, "Wrong admin token.")
    response = redirect(safe_next(request.form.get("next")), 303)
    _set_cookie(response, session.SESSION_COOKIE, session.new_session(cfg), session.SESSION_TTL)
    response.delete_cookie(session.LOGIN_COOKIE, path=session.COOKIE_PATH)
    return response


@bp.post("/logout")
def logout():
    response = redirect(url_for("console.login"), 303)
    response.delete_cookie(session.SESSION_COOKIE, path=session.COOKIE_PATH)
    return response
