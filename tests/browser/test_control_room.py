"""The control room in headless Chromium against a real relay: logging in, a participant
registering live, the clock, releasing and skipping injects, two controllers seeing each
other's actions, no entry without credentials, participant and scenario text shown as text
(never run), and cross-site requests refused."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from .conftest import Control, Room, screenshot

IMG = '<img src=x onerror="window.__xss=1">'
SCRIPT = "<script>window.__xss=2</script>"
SCENARIO = f"""
schema = 1
[exercise]
name = "drill"
title = 'Thirteen days <b>drill</b>'
brief = "A small crisis for the control room."
[clock]
start = "1962-10-22T08:00:00-04:00"
speed = 60.0
[[roles]]
name = "kennedy"
kind = "party"
title = "President of the United States"
brief = "Get the missiles out."
[[roles]]
name = "khrushchev"
kind = "party"
title = "Chairman of the Council of Ministers"
brief = "Keep face."
[[roles]]
name = "castro"
kind = "party"
title = '{IMG}'
brief = '{SCRIPT}'
[[roles]]
name = "u-thant"
kind = "mediator"
title = "Secretary-General"
brief = "Mediate."
[policy]
direct = [["kennedy", "khrushchev"]]
[[policy.via]]
between = ["kennedy", "castro"]
mediator = "u-thant"
[[injects]]
at = "1962-10-22T09:00:00-04:00"
to = ["all"]
title = "Morning papers"
text = "The press has the story."
[[injects]]
at = "1962-10-22T10:00:00-04:00"
to = ["kennedy"]
title = "Photographs"
text = "New U-2 photographs."
[[injects]]
at = "1962-10-22T11:00:00-04:00"
to = ["khrushchev"]
title = "Ships"
text = "The ships near the line."
[[injects]]
at = "1962-10-22T12:00:00-04:00"
to = ["castro"]
title = '{IMG}'
text = '{SCRIPT} and {IMG}'
[[injects]]
at = "1962-10-22T13:00:00-04:00"
to = ["all"]
title = "Noon"
text = "Nothing yet."
[[injects]]
at = "1962-10-22T14:00:00-04:00"
to = ["all"]
title = "Afternoon"
text = "Quiet."
"""
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@pytest.fixture(scope="module")
def control(control_relay: Control) -> Control:
    control_relay.load(SCENARIO)
    return control_relay


def no_script_ran(room: Room) -> None:
    assert room.driver.execute_script("return window.__xss;") is None
    assert room.css("#room img, #room script") == []
    assert console_errors(room) == []


def console_errors(room: Room) -> list[str]:
    """What the page's console reported as errors (a refused inline script or style would be
    one), but the favicon the page does not have."""
    return [e["message"] for e in room.driver.get_log("browser")
            if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]  # fmt: skip


def test_refused_without_credentials(room: Room, control: Control) -> None:
    status, _, body = control.api("GET", "/v1/control/state", bearer=False)
    assert (status, body["error"]) == (401, "control_auth"), body
    status, _, body = control.api("GET", "/v1/control/events", bearer=False)
    assert (status, body["error"]) == (401, "control_auth"), body
    status, _, body = control.api("GET", "/v1/control/state", headers={"Authorization": "Bearer x"})
    assert status == 401, body
    for path, kind in [("/control", "text/html"), ("/control/static/control.js", "javascript"),
                       ("/control/static/control.css", "text/css")]:  # fmt: skip
        status, headers, _ = control.api("GET", path, bearer=False)
        assert status == 200 and kind in headers["Content-Type"]
        assert headers["Content-Security-Policy"] == CSP
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["Cache-Control"] == "no-store"
    status, _, body = control.api("GET", "/control/static/..%2Fcontrol.py", bearer=False)
    assert status == 404 and body["error"] == "not_found"

    room.open()
    assert room.shown("login") and not room.shown("room")
    room.login(token="not-the-admin-token")
    room.wait(lambda: room.shown("login-error"), "the refusal")
    assert "not this relay's" in room.text("login-error")
    assert not room.shown("room") and room.css("#roles tbody tr") == []
    screenshot(room.driver, "control-login")


def test_login_and_a_participant_registers_live(room: Room, control: Control) -> None:
    room.login("duty officer")
    assert room.role_cells("kennedy")[3] == "not yet"
    assert room.role_cells("kennedy")[4].startswith("unused invite out")
    room.mark_document()
    control.register("kennedy")
    room.wait(lambda: room.role_cells("kennedy")[3].startswith("yes"), "kennedy registered")
    assert room.same_document(), "the page was reloaded, not updated live"
    assert room.text("exercise-title") == "Thirteen days <b>drill</b> (drill)"
    assert console_errors(room) == []
    screenshot(room.driver, "control-registered-live")


def test_a_new_invite_from_the_page(room: Room, control: Control) -> None:
    room.login()
    row = room.driver.find_element(By.CSS_SELECTOR, '#roles tr[data-role="khrushchev"]')
    row.find_element(By.CSS_SELECTOR, "button.invite").click()
    room.wait(lambda: room.shown("invite-shown"), "the invite")
    assert room.text("invite-role") == "khrushchev"
    code = room.text("invite-code")
    assert code and code != control.invites["khrushchev"]
    control.register("khrushchev", code)
    room.wait(lambda: room.role_cells("khrushchev")[3].startswith("yes"), "khrushchev registered")
    room.by_id("invite-hide").click()
    assert not room.shown("invite-shown") and room.text("invite-code") == ""
    assert any("invite" in line and "khrushchev" in line for line in room.actions())


def test_pause_resume_set_and_speed(room: Room, control: Control) -> None:
    room.login()
    assert room.text("clock-state") == "paused"
    frozen = room.text("scenario-time")
    time.sleep(1.2)
    assert room.text("scenario-time") == frozen, "a paused clock moved"

    room.by_id("clock-resume").click()
    room.wait(lambda: room.text("clock-state") == "running", "the clock running")
    room.wait(lambda: room.text("scenario-time") != frozen, "the scenario time ticking")
    assert control.state()["clock"]["paused"] is False
    room.by_id("clock-pause").click()
    room.wait(lambda: room.text("clock-state") == "paused", "the clock paused")
    stopped = room.text("scenario-time")
    time.sleep(1.2)
    assert room.text("scenario-time") == stopped
    assert control.state()["clock"]["paused"] is True

    room.by_id("clock-set-time").send_keys("1962-10-22T08:30:00-04:00")
    room.by_id("clock-set-form").submit()
    room.wait(lambda: room.text("scenario-time") == "1962-10-22 08:30:00 -04:00", "the set time")
    speed = room.by_id("clock-speed-value")
    speed.clear()
    speed.send_keys("120")
    room.by_id("clock-speed-form").submit()
    room.wait(lambda: room.text("clock-speed").startswith("120"), "the new speed")
    assert control.state()["clock"]["speed"] == 120
    assert room.text("wall-time").startswith(time.strftime("%Y-%m-%d"))
    actions = room.actions()
    assert all(any("clock" in a and word in a for a in actions)
               for word in ("pause", "resume", "set", "speed")), actions  # fmt: skip


def test_release_and_skip_injects(room: Room, control: Control) -> None:
    room.login("alice")
    assert room.inject_status(1) == room.inject_status(2) == "scheduled"
    room.click_inject(1, "release")
    room.wait(lambda: room.inject_status(1) == "released", "inject 1 released")
    assert room.inject_cell(1, "status").startswith("released by alice")
    room.click_inject(2, "skip")
    room.wait(lambda: room.inject_status(2) == "skipped", "inject 2 skipped")
    assert room.inject_cell(2, "status") == "skipped by alice"
    for number in (1, 2):
        assert room.inject_row(number).find_elements(By.CSS_SELECTOR, "button") == []
        status, _, body = control.api("POST", f"/v1/control/injects/{number}/release", {})
        assert (status, body["error"]) == (409, "inject_done"), body
    assert control.inject(1)["by"] == "alice" and control.inject(2)["status"] == "skipped"


def test_two_controllers_see_each_others_actions(
    make_browser: Callable[[], webdriver.Chrome], control: Control
) -> None:
    alice = Room(make_browser(), control).login("alice")
    bob = Room(make_browser(), control).login("bob")
    bob.mark_document()
    alice.click_inject(3, "release")
    bob.wait(lambda: bob.inject_status(3) == "released", "bob seeing alice's release")
    assert bob.inject_cell(3, "status").startswith("released by alice")
    assert bob.actions()[0].split(" ", 2)[2].startswith("alice release"), bob.actions()
    assert bob.same_document()
    # and the other way round
    bob.driver.execute_script(
        "document.querySelector('#injects tr[data-inject=\"5\"] button.release').click();"
    )
    bob.wait(lambda: bob.inject_status(5) == "released", "bob's own release")
    alice.wait(lambda: alice.inject_cell(5, "status").startswith("released by bob"), "alice")


def test_traffic_as_each_class_lets_control_see_it(room: Room, control: Control) -> None:
    """A record letter shows who wrote to whom and when (its class gives control the envelope),
    never its words."""
    kennedy, khrushchev = control.user("kennedy"), control.user("khrushchev")
    kennedy.send(khrushchev, "Between us: the Jupiters can go.")
    room.login("alice")

    def letters() -> list[list[str]]:
        rows = room.css("#letters tbody tr")
        return [[c.text for c in row.find_elements(By.TAG_NAME, "td")][1:] for row in rows]

    room.wait(lambda: letters() == [["record", "kennedy", "khrushchev", ""]], "the letter")
    assert "Jupiters" not in room.driver.page_source
    counts = {row.get_attribute("data-class"): row.find_elements(By.TAG_NAME, "td")[2].text
              for row in room.css("#classes tbody tr")}  # fmt: skip
    assert counts == {"record": "1", "confidential": "0", "off_the_record": "0",
                      "communique": "0"}, counts  # fmt: skip
    room.driver.set_window_size(1400, 2400)
    screenshot(room.driver, "control-room", docs=True)


def test_participant_and_scenario_text_is_shown_as_text(room: Room, control: Control) -> None:
    room.login()
    assert room.role_cells("castro")[2] == IMG
    assert room.inject_cell(4, "title") == IMG
    assert room.inject_cell(4, "body") == f"{SCRIPT} and {IMG}"
    no_script_ran(room)
    # text control types goes the same way: an edited and an added inject
    room.click_inject(6, "edit")
    room.wait(lambda: room.shown("inject-edit-form"), "the edit form")
    text = room.by_id("edit-text")
    text.clear()
    text.send_keys(f"Edited: {SCRIPT}{IMG}")
    room.by_id("inject-edit-form").submit()
    room.wait(lambda: room.inject_cell(6, "body") == f"Edited: {SCRIPT}{IMG}", "the edit")
    room.by_id("add-at").send_keys("1962-10-23T09:00:00-04:00")
    room.by_id("add-title").send_keys(IMG)
    room.by_id("add-text").send_keys(SCRIPT)
    room.by_id("inject-add-form").submit()
    room.wait(lambda: len(room.css("#injects tbody tr")) == 7, "the added inject")
    assert room.inject_cell(7, "title") == IMG and room.inject_cell(7, "body") == SCRIPT
    no_script_ran(room)
    # and were markup ever to reach the page, the Content-Security-Policy would not run it
    room.driver.execute_script(
        """const s = document.createElement("script"); s.textContent = "window.__xss = 4;";
        document.body.appendChild(s);"""
    )
    assert room.driver.execute_script("return window.__xss;") is None
    assert any("Content Security Policy" in e for e in console_errors(room))


@pytest.fixture
def foreign_site() -> Iterator[str]:
    """A page on another origin (another port of 127.0.0.1: the same site, so the browser
    sends the SameSite=Strict cookie along; only the CSRF token and the Origin stop it)."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!DOCTYPE html><title>elsewhere</title><p>another site</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_cross_site_requests_are_refused(room: Room, control: Control, foreign_site: str) -> None:
    room.login()
    assert room.inject_status(6) == "scheduled"
    room.driver.get(foreign_site)
    target = f"{control.url}/v1/control/injects/6/skip"
    sent = room.driver.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch(arguments[0], {method: "POST", credentials: "include", mode: "no-cors",
                             headers: {"Content-Type": "text/plain"}, body: "{}"})
          .then(() => done("sent"), (e) => done(String(e)));""",
        target,
    )
    assert sent == "sent"
    # a plain form post, the oldest trick: the browser shows the relay's refusal
    room.driver.execute_script(
        """const form = document.createElement("form");
        form.method = "POST"; form.action = arguments[0];
        document.body.appendChild(form); form.submit();""",
        target,
    )
    room.wait(lambda: '"csrf"' in room.driver.find_element(By.TAG_NAME, "body").text,
              "the relay's refusal")  # fmt: skip
    assert control.inject(6)["status"] == "scheduled"

    # the same by hand: a session's cookie without its token, or with it from another origin
    status, headers, body = control.api(
        "POST", "/v1/control/session", {"token": control.token, "name": "mallory"}, bearer=False
    )
    assert status == 201, body
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    for extra in ({}, {"X-CSRF-Token": "guess"},
                  {"X-CSRF-Token": body["csrf"], "Origin": "http://evil.example"}):  # fmt: skip
        status, _, refused = control.api(
            "POST", "/v1/control/injects/6/skip", {}, {"Cookie": cookie, **extra}, bearer=False
        )
        assert (status, refused["error"]) == (403, "csrf"), refused
    assert control.inject(6)["status"] == "scheduled"


def test_a_relay_restart_ends_the_session(room: Room, control: Control) -> None:
    """Sessions live in the relay's memory: after a restart the page asks for a login again
    (the live channel is refused, the page finds out why), and the same token opens it."""
    room.login("duty officer")
    control.relay.stop()
    control.relay.start()
    room.wait(lambda: room.shown("login"), "the login form again", timeout=20)
    assert "log in again" in room.text("login-error")
    room.login("duty officer")
    assert room.inject_status(1) == "released"
