"""The control page in a real browser: Debian's Chromium driven by Selenium through Debian's
chromedriver (never a downloaded browser or driver: both paths are given, so Selenium Manager
never runs), headless and offline, against a real relay subprocess.

`make test` installs `chromium` and `chromium-driver` first (the Makefile's `browser` step);
without them these tests fail, never skip. Screenshots go to `ARTIFACTS` (printed in the
header of the run); with `UPDATE_SCREENSHOTS=1` (`make screenshots`) the ones the README shows
are copied to `docs/` too, so an ordinary run leaves the tree as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from backchannel_relay.bench import admin_token_from
from backchannel_relay.cli import main as relay_main
from tests.cli.conftest import GENEROUS, Relay, User

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)
ARTIFACTS = Path(__file__).parent / "artifacts"
DOCS = Path(__file__).parents[2] / "docs"
WAIT = 10.0
"""Seconds a step may take to show on the page (the live channel polls every second)."""


SAVED: list[Path] = []


def pytest_report_header() -> str:
    return f"browser tests: Chromium {CHROMIUM}, screenshots in {ARTIFACTS}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SAVED:
        terminalreporter.write_line(f"browser screenshots ({len(SAVED)}) saved in {ARTIFACTS}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember each phase's outcome, so that a failed test's browsers leave a screenshot."""
    report = yield
    item.stash.setdefault(FAILED, False)
    if report.failed:
        item.stash[FAILED] = True
    return report


FAILED = pytest.StashKey[bool]()


def screenshot(driver: webdriver.Chrome, name: str, docs: bool = False) -> Path:
    """Save the page as ARTIFACTS/NAME.png (and docs/NAME.png for the README, when asked)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    SAVED.append(path)
    if docs and os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS / path.name)
    return path


def chromium(profile: Path) -> webdriver.Chrome:
    for needed in (CHROMIUM, CHROMEDRIVER):
        if not os.access(needed, os.X_OK):
            pytest.fail(f"{needed} is missing: `make browser` installs Debian's chromium and "
                        "chromium-driver (apt-get, as root)")  # fmt: skip
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.fixture
def make_browser(request: pytest.FixtureRequest) -> Iterator[Callable[[], webdriver.Chrome]]:
    """Start headless Chromiums, each with a fresh profile (no cookie shared); on a failure each
    leaves a screenshot named after the test."""
    started: list[tuple[webdriver.Chrome, tempfile.TemporaryDirectory[str]]] = []

    def make() -> webdriver.Chrome:
        profile = tempfile.TemporaryDirectory(prefix="bc-chromium-")
        started.append((chromium(Path(profile.name)), profile))
        return started[-1][0]

    try:
        yield make
    finally:
        for index, (driver, profile) in enumerate(started):
            if request.node.stash.get(FAILED, False):
                try:
                    screenshot(driver, f"FAILED-{request.node.name}-{index}")
                except Exception as exc:  # the browser may be what failed
                    print(f"no screenshot of browser {index}: {exc}")
            driver.quit()
            profile.cleanup()


@pytest.fixture
def browser(make_browser: Callable[[], webdriver.Chrome]) -> webdriver.Chrome:
    return make_browser()


# --- the relay and its exercise ----------------------------------------------------------------


class Control:
    """A relay with one loaded exercise, its admin token, and what control was handed out."""

    def __init__(self, relay: Relay, home: Path, token: str | None = None) -> None:
        self.relay = relay
        self.home = home
        token = token or admin_token_from(relay.log.read_text())
        assert token, "the relay printed no admin token"
        self.token = token
        self.invites: dict[str, str] = {}
        self.users: dict[str, User] = {}

    @property
    def url(self) -> str:
        return self.relay.url

    def exercise(self, *args: str) -> Any:
        """`backchannel-relay exercise ... --json` on the relay's store, as control runs it."""
        store = ["--data-dir", str(self.relay.data_dir)]
        if "--database" in self.relay.extra:  # the same store the relay serves
            store += ["--database", self.relay.extra[self.relay.extra.index("--database") + 1]]
        result = CliRunner().invoke(relay_main, ["exercise", *args, *store, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def load(self, scenario: str) -> dict[str, Any]:
        path = self.home.parent / "scenario.toml"
        path.write_text(scenario)
        loaded = self.exercise("load", str(path))
        self.invites = {r["name"]: r["invite"] for r in loaded["roles"]}
        return dict(loaded)

    def register(self, name: str, invite: str | None = None) -> User:
        """The participant `name` registers (the CLI, its own profile) with its invite."""
        user = User(self.home, name)
        user.init(self.relay)
        registered = user.json("register", invite or self.invites[name])
        assert registered["name"] == name
        self.users[name] = user
        return user

    def user(self, name: str) -> User:
        """`name`, registered now unless it already is."""
        return self.users.get(name) or self.register(name)

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        bearer: bool = True,
    ) -> tuple[int, dict[str, str], Any]:
        """One request to the relay -> (status, headers, JSON body or text)."""
        sent = dict(headers or {})
        if bearer:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data, sent, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                status, got, raw = answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as exc:
            status, got, raw = exc.code, dict(exc.headers), exc.read()
        try:
            return status, got, json.loads(raw)
        except ValueError:
            return status, got, raw.decode(errors="replace")

    def state(self) -> dict[str, Any]:
        status, _, body = self.api("GET", "/v1/control/state")
        assert status == 200, body
        return dict(body)

    def inject(self, number: int) -> dict[str, Any]:
        (found,) = [i for i in self.state()["injects"] if i["number"] == number]
        return dict(found)


@pytest.fixture(scope="module")
def control_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Control]:
    """One relay per test module (a fresh store, so it prints its admin token)."""
    workdir = tmp_path_factory.mktemp("control")
    relay = Relay(workdir / "relay", None, *GENEROUS).start()
    try:
        yield Control(relay, workdir / "home")
    finally:
        relay.stop()


# --- the page ----------------------------------------------------------------------------------


class Room:
    """The control page in one browser, as a controller uses it."""

    def __init__(self, driver: webdriver.Chrome, control: Control) -> None:
        self.driver = driver
        self.control = control

    def open(self) -> Room:
        self.driver.get(self.control.url + "/control")
        self.wait(lambda: self.shown("login") or self.shown("room"), "the page")
        return self

    def login(self, name: str = "control", token: str | None = None) -> Room:
        self.open()
        self.wait(lambda: self.shown("login"), "the login form")
        field = self.by_id("login-token")
        field.clear()
        field.send_keys(token if token is not None else self.control.token)
        who = self.by_id("login-name")
        who.clear()
        who.send_keys(name)
        self.by_id("login-form").submit()
        if token is None:
            self.wait(lambda: self.shown("room") and self.text("controller-name") == name,
                      "the control room")  # fmt: skip
            self.wait(lambda: self.text("live") == "live", "the live channel")
        return self

    def by_id(self, element_id: str) -> WebElement:
        return self.driver.find_element(By.ID, element_id)

    def css(self, selector: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def shown(self, element_id: str) -> bool:
        return bool(self.by_id(element_id).is_displayed())

    def text(self, element_id: str) -> str:
        return str(self.by_id(element_id).text)

    def wait(self, check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        def settled(_: Any) -> bool:
            try:
                return check()
            except StaleElementReferenceException:  # redrawn meanwhile: look again
                return False

        WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            settled, f"timed out waiting for {what}"
        )

    def role_cells(self, name: str) -> list[str]:
        return [c.text for c in self.css(f'#roles tr[data-role="{name}"] td')]

    def inject_row(self, number: int) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, f'#injects tr[data-inject="{number}"]')

    def inject_status(self, number: int) -> str:
        return str(self.inject_row(number).get_attribute("data-status"))

    def inject_cell(self, number: int, column: str) -> str:
        return str(self.inject_row(number).find_element(By.CSS_SELECTOR, f"td.{column}").text)

    def click_inject(self, number: int, action: str) -> None:
        self.inject_row(number).find_element(By.CSS_SELECTOR, f"button.{action}").click()

    def actions(self) -> list[str]:
        return [item.text for item in self.css("#actions li")]

    def mark_document(self) -> None:
        """Mark this document: `same_document` tells later whether the page was reloaded."""
        self.driver.execute_script("document.documentElement.dataset.mark = 'kept';")

    def same_document(self) -> bool:
        mark = self.driver.execute_script("return document.documentElement.dataset.mark;")
        return bool(mark == "kept")


@pytest.fixture
def room(browser: webdriver.Chrome, control_relay: Control) -> Room:
    return Room(browser, control_relay)
