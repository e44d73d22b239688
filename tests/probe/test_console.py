"""The web console in a real browser: Debian's headless Chromium driven by Selenium through
/usr/bin/chromedriver (never a downloaded browser or driver: Selenium Manager is not asked),
against a real cluster of our own."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from lib.rs.params import ALL_SHARDS, BLOCK_SIZE
from tests.probe.conftest import wait_for

pytestmark = pytest.mark.probe

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Seconds a page may take to appear, a download to finish, a killed server to show down.
PAGE_TIMEOUT = 30
DOWN_TIMEOUT = 60


@pytest.fixture
def browser(tmp_path, monkeypatch):
    """A headless Chromium that stays on loopback and downloads into tmp_path/downloads."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def no_downloads(self, *args):
        raise AssertionError("Selenium Manager was asked for a browser or driver")

    monkeypatch.setattr(SeleniumManager, "binary_paths", no_downloads)
    for path in (CHROMIUM, CHROMEDRIVER):
        assert os.access(path, os.X_OK), f"{path} is missing: run scripts/setup.sh --test"
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-default-apps", "--window-size=1280,1000",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.*",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def _find(driver, css: str):
    from selenium.webdriver.common.by import By
    return wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, css), PAGE_TIMEOUT)[0]


def _downloaded(folder: Path, name: str) -> Path | None:
    path = folder / name
    busy = list(folder.glob("*.crdownload"))
    return path if path.exists() and not busy else None


def test_console_in_a_real_browser(make_cluster, browser, tmp_path, record_property):
    from selenium.webdriver.common.by import By

    cluster = make_cluster(api_servers=1)
    base = f"http://{cluster.api[0].address}/console"
    shots = []

    def screenshot(name: str) -> None:
        path = tmp_path / f"console-{name}.png"
        assert browser.save_screenshot(str(path))
        shots.append(path)

    # log in: any page sends us to the form, and back to that page after it
    browser.get(f"{base}/buckets/")
    _find(browser, "#token").send_keys(cluster.admin_token)
    _find(browser, "#login").click()
    wait_for(lambda: browser.current_url.endswith("/console/buckets/"), PAGE_TIMEOUT)

    # upload a file of a few blocks into a folder of the book bucket
    data = os.urandom(2 * BLOCK_SIZE + 12345)
    source = tmp_path / "report é.bin"
    source.write_bytes(data)
    browser.get(f"{base}/buckets/book/?prefix=console/")
    _find(browser, "#upload-file").send_keys(str(source))
    _find(browser, "#upload").click()
    wait_for(lambda: "/object?" in browser.current_url, PAGE_TIMEOUT)

    # find it in the list and open its page: six shards, all present and verified
    browser.get(f"{base}/buckets/book/")
    _find(browser, "a[href*='prefix=console']").click()
    link = wait_for(lambda: [a for a in browser.find_elements(By.CSS_SELECTOR, "a.key")
                             if a.text == source.name], PAGE_TIMEOUT)[0]
    screenshot("listing")
    link.click()
    assert _find(browser, "#key").text == source.name
    rows = browser.find_elements(By.CSS_SELECTOR, "#shards tr.shard")
    assert len(rows) == ALL_SHARDS
    assert all("shard-ok" in row.get_attribute("class") for row in rows)
    assert _find(browser, "#health").text == "all healthy"
    screenshot("object")
    object_page = browser.current_url

    # kill a data server of this cluster: the cluster page marks it down
    victim = cluster.data[0]
    cluster.kill_node(victim)
    row = f"tr.node[data-address='{victim.address}']"

    def marked_down():
        browser.get(f"{base}/cluster")
        found = browser.find_elements(By.CSS_SELECTOR, row)
        return found and found[0].get_attribute("data-state") == "down"

    wait_for(marked_down, DOWN_TIMEOUT, interval=1)
    assert _find(browser, f"{row} td.state").text == "down"
    live = browser.find_elements(By.CSS_SELECTOR, "tr.node[data-state='live']")
    assert len(live) == len(cluster.data) - 1
    screenshot("cluster")

    # download it (decoded from the five shards left): the same bytes
    browser.get(object_page)
    _find(browser, "#download").click()
    saved = wait_for(lambda: _downloaded(browser.downloads, source.name), PAGE_TIMEOUT)
    assert saved.read_bytes() == data

    # the read had the lost shard rebuilt: the cluster page lists the repair
    def repaired():
        browser.get(f"{base}/cluster")
        return browser.find_elements(By.CSS_SELECTOR, "#repairs tr.repair[data-outcome='done']")

    wait_for(repaired, DOWN_TIMEOUT, interval=1)
    screenshot("repairs")

    # delete it: gone from the list
    browser.get(object_page)
    _find(browser, "#delete").click()
    wait_for(lambda: "/object?" not in browser.current_url, PAGE_TIMEOUT)
    keys = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "a.key")]
    assert source.name not in keys
    screenshot("deleted")

    for path in shots:
        assert path.stat().st_size > 0
    record_property("screenshots", " ".join(str(p) for p in shots))
    print("screenshots:", *shots)
