"""The audit web view in a real headless Chromium (Debian's chromium and chromium-driver):
a known row appears, filters narrow the table, and new rows arrive live."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.harness import Gateway

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: apt-get install chromium chromium-driver "
                        "(scripts/bootstrap.sh does)")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or ""),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


def denied_lookup(gateway: Gateway, policy: Path, name: str) -> None:
    result = gateway.run(policy, "/usr/bin/python3", "-c",
                         f"import socket\ntry: socket.gethostbyname('{name}')\n"
                         "except OSError: pass")
    assert result.returncode == 0, result.stderr


def table(driver: webdriver.Chrome) -> list[list[str]]:
    """(host, decision) of every row, read in one go (the table updates live)."""
    rows: list[list[str]] = driver.execute_script(
        "return [...document.querySelectorAll('#rows tr')].map(r => "
        "[r.querySelector('td.host').textContent, r.querySelector('td.decision').textContent])")
    return rows


def rows_for(driver: webdriver.Chrome, host: str) -> list[str]:
    return [decision for shown, decision in table(driver) if shown == host]


def test_audit_page_lists_filters_and_updates(gateway: Gateway,
                                              browser: webdriver.Chrome) -> None:
    policy = gateway.policy("web-none", [])
    first = f"webview-{secrets.token_hex(4)}.upstream.test"
    denied_lookup(gateway, policy, first)
    token = gateway.token("auditor", "web-test")
    wait = WebDriverWait(browser, 20, poll_frequency=0.2)

    browser.get(f"{gateway.api_url}/audit")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "apply").click()
    wait.until(lambda d: rows_for(d, first))
    assert set(rows_for(browser, first)) == {"deny"}

    Select(browser.find_element(By.ID, "decision")).select_by_visible_text("allow")
    browser.find_element(By.ID, "apply").click()
    wait.until(lambda d: "rows; live" in d.find_element(By.ID, "status").text
               and not rows_for(d, first))

    Select(browser.find_element(By.ID, "decision")).select_by_visible_text("any")
    host = browser.find_element(By.ID, "host")
    host.clear()
    host.send_keys("webview-*.upstream.test")
    browser.find_element(By.ID, "apply").click()
    wait.until(lambda d: rows_for(d, first))
    assert {host for host, _ in table(browser)} == {first}  # the filter narrowed the table
    assert "host=webview-" in browser.current_url       # and the address can be shared

    second = f"webview-{secrets.token_hex(4)}.upstream.test"
    denied_lookup(gateway, policy, second)              # a new row while the page is open
    wait.until(lambda d: rows_for(d, second))


def test_audit_page_refuses_a_bad_token(gateway: Gateway, browser: webdriver.Chrome) -> None:
    browser.get(f"{gateway.api_url}/audit")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{gateway.api_url}/audit")
    browser.find_element(By.ID, "token").send_keys("sgt_nonexistent_" + "x" * 43)
    browser.find_element(By.ID, "apply").click()
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "status").text.startswith("error 401"))
    assert browser.find_elements(By.CSS_SELECTOR, "#rows tr") == []
