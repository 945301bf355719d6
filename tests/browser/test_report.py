"""The after-action review in a real browser: the report of a scripted cuba-1962 run (three
participants' exports) opened from disk (a file:// URL: no server, no network) in headless
Chromium. Its first screen says what it cannot contain; its timeline holds every record it
should (the exported letters' texts, the inject released by hand, the communiqués, the
proposal's final state) and nothing said off the record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.cli import conftest as cli
from tests.cli.test_export_all import CANARY, CANARY_BACK
from tests.cli.test_report import MARKUP, RELEASED_BY, assert_no_canary, build_report

from .conftest import screenshot

make_relay, home, _clean_environment = cli.make_relay, cli.home, cli._clean_environment
"""The CLI tests' fixtures: a relay subprocess, a home for profiles, a clean environment."""

SHOULD = (
    "Letter of October 22: the missiles must go.",  # Kennedy's, in two exports: shown once
    "Letter of October 26: no invasion, and they go.",
    "Cuba wants guarantees.",  # Castro's letter, forwarded by U Thant
    "Radio Moscow: the ships will turn back.",
    "The quarantine stands.",
    "The President announces a quarantine of Cuba",  # inject 1, delivered by the clock
    "The quarantine is in force; Soviet ships halt",  # inject 2, released by hand
    "Missiles out of Cuba",
    MARKUP,  # shown as the text it is
)


def test_the_report_opens_from_disk_and_holds_what_it_should(
    make_relay: Any, home: Path, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    built = build_report(make_relay, home, tmp_path)
    assert_no_canary(built.out)
    browser.get((built.out / "index.html").resolve().as_uri())
    assert browser.title.startswith("After-action review: Thirteen Days")

    # The first screen: what the report cannot contain, each class and what it hid.
    limits = browser.find_element(By.ID, "limits")
    assert limits.location["y"] < 900, "the limits are not on the first screen"
    said = limits.text
    assert "Nothing said off the record, nor who spoke off the record" in said
    for channel_class in ("record", "confidential", "off the record", "communique"):
        assert channel_class in said
    assert "Letters nobody exported" in said
    screenshot(browser, "report", docs=True)

    timeline = browser.find_element(By.ID, "timeline").text
    for text in SHOULD:
        assert text in timeline, text
    assert timeline.count("Letter of October 22: the missiles must go.") == 1
    for canary in (CANARY, CANARY_BACK, "CANARY"):
        assert canary not in browser.page_source
    assert f"inject 2 released by {RELEASED_BY}" in timeline  # markup shown as text
    assert "kennedy registered" in timeline and "clock set" in timeline
    rows = browser.find_elements(By.CSS_SELECTOR, "#timeline tr.ev-letter")
    sources = [r.find_elements(By.TAG_NAME, "td")[-1].text for r in rows]
    assert any("export:kennedy" in s and "export:khrushchev" in s for s in sources), sources

    (proposal,) = browser.find_elements(By.CSS_SELECTOR, "tr.proposal")
    assert "Missiles out of Cuba" in proposal.text
    assert proposal.find_element(By.CLASS_NAME, "final").text.startswith("accepted")
    injects = browser.find_elements(By.CSS_SELECTOR, "tr.inject")
    statuses = {r.find_elements(By.TAG_NAME, "td")[0].text: r.text for r in injects}
    assert "released" in statuses["1"] and "the clock" in statuses["1"]
    assert "released" in statuses["2"] and RELEASED_BY in statuses["2"]
    assert "skipped" in statuses["3"] and "second-desk" in statuses["3"]
    assert "scheduled" in statuses["4"]
    assert "inject 3 skipped by second-desk" in timeline
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 2 and browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")
    assert no_script_ran(browser)
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    screenshot(browser, "report-end")


def no_script_ran(browser: webdriver.Chrome) -> bool:
    """The page holds no script element at all."""
    return not browser.find_elements(By.TAG_NAME, "script")
