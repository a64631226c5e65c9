"""Dashboard login, sessions and logout on each database: cookie flags, bad and hostile logins answered
with a message (never a 5xx), the login form's CSRF defences, idle and absolute expiry, and sessions
that end when their API token is revoked or their user disabled."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from tests.conftest import Fleet
from tests.integration.hub.web.conftest import ORIGIN, Browser, csrf_of, sessions_stored

pytestmark = pytest.mark.integration


def audit_actions(fleet: Fleet) -> list[tuple[str, str, str]]:
    entries = fleet.call("GET", "/audit").json()
    return [(e["actor"], e["action"], e["outcome"]) for e in entries]


def test_login_starts_a_session_held_only_by_a_strict_cookie(fleet: Fleet, browser: Browser) -> None:
    assert browser.get("/ui/").headers["location"].startswith("/ui/login?reason=login_required")
    page = browser.get("/ui/login")
    login_cookie = page.headers["set-cookie"]
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert flag.lower() in login_cookie.lower()

    response = browser.post("/ui/login", {"csrf": csrf_of(page.text), "token": fleet.admin})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("__Host-edgefleet_session="))
    parts = [p.strip().lower() for p in cookie.split(";")]
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= set(parts)
    assert not any(p.startswith("domain=") for p in parts)

    secret = browser.session_cookie
    assert secret
    assert len(secret) >= 43
    stored = sessions_stored(fleet)
    assert [h for h, _ in stored] == [hashlib.sha256(secret.encode()).hexdigest()]  # only its hash is kept
    overview = browser.get("/ui/")
    assert overview.status_code == 200
    assert "admin (admin)" in overview.text
    assert overview.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in overview.headers["content-security-policy"]
    assert ("user:admin", "web.login", "ok") in audit_actions(fleet)


def test_a_login_replaces_the_browsers_previous_session(fleet: Fleet, browser: Browser) -> None:
    assert browser.login(fleet.admin).status_code == 303
    first = browser.session_cookie
    assert browser.login(fleet.admin).status_code == 303
    assert browser.session_cookie != first
    assert len(sessions_stored(fleet)) == 1


@pytest.mark.parametrize(
    ("token", "status", "message"),
    [
        ("efa_0123456789abcdef_" + "A" * 43, 401, "unknown API token"),
        ("not-a-token", 401, "malformed API token"),
        ("", 400, "Enter an API token"),
        ("efa_" + "x" * 300, 400, "longer than 200 characters"),
        ("<script>alert(1)</script>", 401, "malformed API token"),
        ("efa_\u00e9\u4e2d\U0001f600", 401, "malformed API token"),
    ],
)
def test_bad_tokens_show_the_form_again_with_the_reason(
    fleet: Fleet, browser: Browser, token: str, status: int, message: str
) -> None:
    response = browser.login(token)
    assert response.status_code == status
    assert message in response.text
    assert "<script>alert(1)</script>" not in response.text
    assert 'name="token"' in response.text  # the form again
    assert browser.session_cookie is None
    assert sessions_stored(fleet) == []


def test_refused_logins_are_audited(fleet: Fleet, browser: Browser) -> None:
    browser.login("efa_0123456789abcdef_" + "A" * 43)
    assert ("anonymous", "web.login", "refused:invalid_api_token") in audit_actions(fleet)


def test_a_revoked_tokens_login_is_refused(fleet: Fleet, browser: Browser) -> None:
    token = fleet.operator_token("viewer", "vera")
    token_id = token.split("_")[1]
    assert fleet.call("DELETE", f"/api-tokens/{token_id}").status_code == 200
    response = browser.login(token)
    assert response.status_code == 401
    assert "revoked" in response.text


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"token=" + b"a" * 9000, "application/x-www-form-urlencoded", 413, "larger than 8192 bytes"),
        (b"token=%ff%fe", "application/x-www-form-urlencoded", 400, "not UTF-8"),
        (b"token=a&token=b", "application/x-www-form-urlencoded", 400, "twice"),
        (b"token=a%00b", "application/x-www-form-urlencoded", 400, "NUL"),
        (b"&".join(b"f%d=1" % i for i in range(40)), "application/x-www-form-urlencoded", 400, "too many fields"),
        (b'{"token": "efa_x"}', "application/json", 415, "application/x-www-form-urlencoded"),
        (
            b"--x\r\nContent-Disposition: form-data; name=token\r\n\r\nx\r\n--x--",
            "multipart/form-data; boundary=x",
            415,
            "urlencoded",
        ),
    ],
)
def test_hostile_login_bodies_are_refused_with_a_message_never_a_5xx(
    fleet: Fleet, browser: Browser, body: bytes, content_type: str, status: int, message: str
) -> None:
    browser.get("/ui/login")
    response = browser.post("/ui/login", content=body, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert message in response.text
    assert response.headers["content-type"].startswith("text/html")
    assert sessions_stored(fleet) == []


def test_a_body_larger_than_the_hubs_limit_is_refused_before_the_dashboard(fleet: Fleet, browser: Browser) -> None:
    browser.get("/ui/login")
    response = browser.post(
        "/ui/login", content=b"token=" + b"a" * 100_000, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 413


def test_login_form_csrf_defences(fleet: Fleet, browser: Browser) -> None:
    page = browser.get("/ui/login")
    good = {"csrf": csrf_of(page.text), "token": fleet.admin}
    # another site's page posting the form
    refused = browser.post("/ui/login", good, origin="https://evil.example")
    assert refused.status_code == 403
    assert "another site" in refused.text
    # no Origin and no Referer
    assert browser.post("/ui/login", good, origin=None).status_code == 403
    # wrong or missing token
    assert browser.post("/ui/login", {**good, "csrf": "x" * 43}).status_code == 403
    assert browser.post("/ui/login", {"token": fleet.admin}).status_code == 403
    assert sessions_stored(fleet) == []
    # a Referer of the dashboard itself is enough when a browser sends no Origin
    ok = browser.post("/ui/login", good, origin=None, headers={"Referer": f"{ORIGIN}/ui/login"})
    assert ok.status_code == 303


def test_login_without_the_login_cookie_is_refused(fleet: Fleet, browser: Browser) -> None:
    page = browser.get("/ui/login")
    browser.client.cookies.clear()
    response = browser.post("/ui/login", {"csrf": csrf_of(page.text), "token": fleet.admin})
    assert response.status_code == 403
    assert "cookie" in response.text


def test_logout_ends_the_session_and_is_audited(fleet: Fleet, admin_browser: Browser) -> None:
    old = admin_browser.session_cookie
    csrf = admin_browser.csrf()
    assert admin_browser.post("/ui/logout", {"csrf": "wrong" * 9}).status_code == 403
    assert len(sessions_stored(fleet)) == 1
    response = admin_browser.post("/ui/logout", {"csrf": csrf})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?reason=logged_out"
    assert sessions_stored(fleet) == []
    assert ("user:admin", "web.logout", "ok") in audit_actions(fleet)
    admin_browser.client.cookies.set("__Host-edgefleet_session", old or "")
    again = admin_browser.get("/ui/devices")
    assert again.status_code == 303
    assert "reason=session_unknown" in again.headers["location"]


def test_idle_sessions_expire(fleet: Fleet, admin_browser: Browser) -> None:
    fleet.clock.advance(timedelta(minutes=29))
    assert admin_browser.get("/ui/").status_code == 200  # used: the idle clock starts again
    fleet.clock.advance(timedelta(minutes=29))
    assert admin_browser.get("/ui/").status_code == 200
    fleet.clock.advance(timedelta(minutes=31))
    response = admin_browser.get("/ui/devices")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?reason=session_expired&next=/ui/devices"
    assert sessions_stored(fleet) == []


def test_sessions_expire_after_their_absolute_lifetime_however_active(fleet: Fleet, admin_browser: Browser) -> None:
    for _ in range(11 * 4):  # 11 hours, a request every 15 minutes
        fleet.clock.advance(timedelta(minutes=15))
        assert admin_browser.get("/ui/releases").status_code == 200
    fleet.clock.advance(timedelta(hours=1))
    response = admin_browser.get("/ui/releases")
    assert response.status_code == 303
    assert "reason=session_expired" in response.headers["location"]


def test_revoking_the_token_ends_its_sessions(fleet: Fleet, browser: Browser) -> None:
    token = fleet.operator_token("operator", "olga")
    assert browser.login(token).status_code == 303
    assert browser.get("/ui/").status_code == 200
    assert fleet.call("DELETE", f"/api-tokens/{token.split('_')[1]}").status_code == 200
    response = browser.get("/ui/")
    assert response.status_code == 303
    assert "reason=session_revoked" in response.headers["location"]
    assert sessions_stored(fleet) == []
    login = browser.get(response.headers["location"])
    assert "its API token was revoked" in login.text


def test_disabling_the_user_ends_the_session_and_a_role_change_applies_at_once(fleet: Fleet, browser: Browser) -> None:
    token = fleet.operator_token("viewer", "vic")
    assert browser.login(token).status_code == 303
    assert "vic (viewer)" in browser.get("/ui/").text
    assert fleet.call("DELETE", "/users/vic").status_code == 200
    response = browser.get("/ui/")
    assert response.status_code == 303
    assert "reason=session_revoked" in response.headers["location"]


def test_a_forged_or_foreign_cookie_is_no_session(fleet: Fleet, browser: Browser) -> None:
    for value in ("A" * 43, "../../etc", "x" * 5000, "'; DROP TABLE web_sessions; --"):
        browser.client.cookies.set("__Host-edgefleet_session", value)
        response = browser.get("/ui/")
        assert response.status_code == 303
        assert response.headers["location"].startswith("/ui/login")


def test_each_token_keeps_a_bounded_number_of_sessions(fleet: Fleet, browser: Browser) -> None:
    for _ in range(fleet.hub.settings.web_sessions_per_token + 3):
        browser.client.cookies.clear()
        assert browser.login(fleet.admin).status_code == 303
    assert len(sessions_stored(fleet)) == fleet.hub.settings.web_sessions_per_token
    assert browser.get("/ui/").status_code == 200  # the newest is among those kept


def test_login_redirects_back_to_a_dashboard_page_only(fleet: Fleet, browser: Browser) -> None:
    page = browser.get("/ui/login?next=/ui/devices")
    response = browser.post("/ui/login", {"csrf": csrf_of(page.text), "token": fleet.admin, "next": "/ui/devices"})
    assert response.headers["location"] == "/ui/devices"
    for target in ("https://evil.example/", "//evil.example/ui/", "/ui/../api/v1/users", "javascript:alert(1)"):
        browser.client.cookies.clear()
        page = browser.get("/ui/login")
        response = browser.post("/ui/login", {"csrf": csrf_of(page.text), "token": fleet.admin, "next": target})
        assert response.headers["location"] == "/ui/"
