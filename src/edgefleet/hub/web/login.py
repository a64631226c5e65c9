"""Dashboard routes that start and end sessions: the login form (an operator API token) and logout."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from edgefleet.hub import offload
from edgefleet.hub.errors import AuthenticationError
from edgefleet.hub.web import sessions
from edgefleet.hub.web.deps import HubDep, SameOrigin, SessionDep
from edgefleet.hub.web.errors import CsrfError
from edgefleet.hub.web.forms import read_form
from edgefleet.hub.web.render import PREFIX, render
from edgefleet.hub.web.security import CSRF_FIELD, check_token

router = APIRouter()
MAX_TOKEN_CHARS = 200
_NEXT_RE = re.compile(r"^/ui/[A-Za-z0-9_\-./?=&%@]{0,300}$")
REASONS = {
    "login_required": "Log in with an operator API token.",
    "session_unknown": "Your session has ended; log in again.",
    "session_expired": "Your session expired; log in again.",
    "session_revoked": "Your session ended: its API token was revoked or expired, or its user disabled.",
    "logged_out": "You are logged out.",
}


def safe_next(value: str | None) -> str:
    """Where to go after login: a dashboard path only, never another site."""
    if value and _NEXT_RE.fullmatch(value) and "//" not in value and ".." not in value:
        return value
    return f"{PREFIX}/"


def set_cookie(response: Response, name: str, value: str, *, max_age: int | None) -> None:
    """Every dashboard cookie: HttpOnly, Secure, SameSite=Strict, Path=/ (the `__Host-` prefix demands the last two)."""
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="strict")


def clear_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="strict")


def _login_page(request: Request, *, message: str | None, status: int, next_path: str) -> Response:
    login_csrf = sessions.new_secret()
    response = render(request, "login.html", status=status, message=message, login_csrf=login_csrf, next_path=next_path)
    set_cookie(response, sessions.LOGIN_COOKIE, login_csrf, max_age=3600)
    return response


@router.get("/login")
def login_form(
    request: Request,
    reason: Annotated[str | None, Query(max_length=40)] = None,
    next_path: Annotated[str | None, Query(alias="next", max_length=400)] = None,
) -> Response:
    """The login form; a fresh login CSRF token in its own cookie and in the form."""
    return _login_page(request, message=REASONS.get(reason or ""), status=200, next_path=safe_next(next_path))


@router.post("/login", dependencies=[SameOrigin])
async def login(request: Request, hub: HubDep) -> Response:
    """Check the token, start a session, set its cookie; a bad token shows the form again with the reason."""
    form = await read_form(request, max_bytes=hub.settings.web_max_form_bytes)
    expected = request.cookies.get(sessions.LOGIN_COOKIE)
    if not expected:
        raise CsrfError("refused: the login form's cookie is missing; reload the login page (are cookies enabled?)")
    check_token(form.get(CSRF_FIELD), expected)
    next_path = safe_next(form.get("next"))
    token = form.get("token", "").strip()
    if not token:
        return _login_page(request, message="Enter an API token (efa_...).", status=400, next_path=next_path)
    if len(token) > MAX_TOKEN_CHARS:
        message = f"That is not an API token: it is longer than {MAX_TOKEN_CHARS} characters."
        return _login_page(request, message=message, status=400, next_path=next_path)
    try:
        secret, _session = await offload.call(
            sessions.login, hub, token, replacing=request.cookies.get(sessions.COOKIE)
        )
    except AuthenticationError as exc:
        return _login_page(request, message=f"Login refused: {exc.message}.", status=401, next_path=next_path)
    response = RedirectResponse(next_path, status_code=303)
    set_cookie(response, sessions.COOKIE, secret, max_age=int(hub.settings.web_session_absolute.total_seconds()))
    clear_cookie(response, sessions.LOGIN_COOKIE)
    return response


@router.post("/logout", dependencies=[SameOrigin])
async def logout(request: Request, hub: HubDep, session: SessionDep) -> Response:
    """End the session (CSRF-checked, so another site cannot log you out)."""
    form = await read_form(request, max_bytes=hub.settings.web_max_form_bytes)
    check_token(form.get(CSRF_FIELD), session.csrf)
    await offload.call(sessions.logout, hub, session)
    response = RedirectResponse(f"{PREFIX}/login?reason=logged_out", status_code=303)
    clear_cookie(response, sessions.COOKIE)
    return response
