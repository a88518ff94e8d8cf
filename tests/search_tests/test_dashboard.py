"""The Ray dashboard of a local search: on loopback, its URL printed, the search's trials visible while it runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import console_errors
from tests.search_tests.tiny import tiny_search

TOKEN_FILE = Path.home() / ".ray" / "auth_token"  # where Ray 2.60 keeps the token it turns on for a new head


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    headers = {"Authorization": f"Bearer {TOKEN_FILE.read_text().strip()}"} if TOKEN_FILE.is_file() else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return json.loads(response.read())


def _wait_for(browser, css: str, timeout: float = 30):
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(expected_conditions.presence_of_element_located(("css selector", css)))


def test_the_dashboard_shows_the_searchs_trials_on_loopback(tiny_eggs, tmp_path, browser):
    port = _free_port()
    log = tmp_path / "search.out"
    # one trial at a time (tiny_search's): one core trains, the other drives Chromium
    argv = [sys.executable, "-m", "search", *tiny_search(tiny_eggs, tmp_path, "--no-retrain", trials=6, max_epochs=6)]
    argv += ["--dashboard-port", str(port)]
    process = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        actors: list = []
        while time.monotonic() < deadline and process.poll() is None:
            if f"Ray dashboard: {url}" in log.read_text():
                try:
                    listed = _get(f"{url}/api/v0/actors?limit=1000")["data"]["result"]["result"]
                except OSError:
                    listed = []  # the dashboard is still starting
                actors = [a for a in listed if "ImplicitFunc" in a.get("class_name", "")]
                if actors:
                    break
            time.sleep(0.5)
        assert actors, f"no trial actor seen on the dashboard; the search said:\n{log.read_text()[-3000:]}"
        assert (tmp_path / "search.log").read_text().count(f"Ray dashboard: {url}") == 1
        address = socket.gethostbyname(socket.gethostname())
        if not address.startswith("127."):  # the machine's own address must not reach the dashboard
            with pytest.raises(OSError), socket.create_connection((address, port), timeout=3):
                pass

        browser.get(f"{url}/#/actors")
        if TOKEN_FILE.is_file():  # log in as a person would: the token into the dashboard's dialog
            field = _wait_for(browser, "input[type=password]")
            field.send_keys(TOKEN_FILE.read_text().strip())
            next(b for b in browser.find_elements("tag name", "button") if b.text.upper() == "SUBMIT").click()
            console_errors(browser)  # what the page asked for before the login was refused, as it should be
        _wait_for(browser, "table tbody tr")
        time.sleep(2)  # the tables refresh after loading
        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        assert "Ray" in browser.title and "ImplicitFunc" in browser.find_element("tag name", "body").text
        # Ray's own page asks for endpoints this Ray lacks (404s); refused ones would mean the login failed
        assert [e for e in console_errors(browser) if "status of 401" in e or "status of 403" in e] == []
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    if keep := os.environ.get("SEARCH_KEEP_SCREENSHOTS"):  # to look at the page: a folder to copy it to
        (Path(keep) / "dashboard.png").write_bytes(shot.read_bytes())
