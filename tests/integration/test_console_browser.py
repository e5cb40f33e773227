"""The console in a real browser: headless Chromium (Debian's) driven by Selenium."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from pydicom import dcmread
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.console import ADMIN_PASSWORD, ConsoleNode, embedded_node, running
from tests.helpers import DEVICE, dcmtk, make_dataset, stored

pytestmark = pytest.mark.integration


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is not installed (tools/install-system-packages.sh)")
    return found


@pytest.fixture
def browser(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile, nothing fetched in the background.

    When the test fails, the page as it was is saved as ``failure.png`` in the test's
    temporary folder (its path is printed with the failure).
    """
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium")
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(_binary("chromedriver")))
    driver.set_page_load_timeout(60)
    try:
        yield driver
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            shot = tmp_path / "failure.png"
            driver.save_screenshot(str(shot))
            print(f"screenshot of the failed page: {shot}")
    finally:
        driver.quit()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ConsoleNode]:
    """A node with its console on a copy of the default LDIF folder."""
    yield from running(lambda: embedded_node(tmp_path))


def _wait(driver: WebDriver, check: Callable[[WebDriver], object], what: str) -> None:
    """Wait until *check* holds. A page replaces its rows, or reloads, while they are read:
    an element gone stale (or, as Chromium says during a reload, no longer in the document)
    is looked up again at the next poll."""

    def settled(d: WebDriver) -> object:
        try:
            return check(d)
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc.msg):
                return False
            raise

    WebDriverWait(
        driver, 30, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    ).until(settled, message=what)


def _sign_in(driver: WebDriver, node: ConsoleNode) -> None:
    driver.get(node.url + "/")
    _wait(driver, lambda d: d.current_url.endswith("/signin"), "redirect to the sign-in page")
    driver.find_element(By.ID, "name").send_keys(node.admin)
    driver.find_element(By.ID, "password").send_keys(ADMIN_PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()
    _wait(driver, lambda d: d.current_url == node.url + "/", "the overview after signing in")


def _fill_rule(driver: WebDriver, condition: str) -> None:
    form = driver.find_element(By.ID, "rule-form")
    form.find_element(By.ID, "cn").send_keys("deidentify-newmod")
    form.find_element(By.CSS_SELECTOR, "input.option[value=RetainUIDsOption]").click()
    form.find_element(By.CSS_SELECTOR, "input[name=coercionDIMSE][value=C_STORE_RQ]").click()
    Select(form.find_element(By.ID, "dicomTransferRole")).select_by_value("SCP")
    form.find_element(By.ID, "coercionPriority").send_keys("20")
    form.find_element(By.CSS_SELECTOR, "[data-rows-for=coercionCondition]").click()
    form.find_element(By.CSS_SELECTOR, ".row input[name=coercionCondition]").send_keys(condition)


def _total(driver: WebDriver, called: str) -> int:
    for row in driver.find_elements(By.CSS_SELECTOR, "#objects tbody tr"):
        cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        if len(cells) == 4 and cells[0] == called and cells[1] == "stored":
            return int(cells[2])
    return 0


def test_rule_made_in_the_browser_applies_to_storescu(
    browser: WebDriver, node: ConsoleNode, tmp_path: Path
) -> None:
    """Sign in, create a de-identifying rule for a new sending AE (a field error first), see
    it applied to an object storescu sends, and the overview's counter move."""
    _sign_in(browser, node)
    browser.get(node.url + "/rules/new")
    _fill_rule(browser, "SendingAETitle=NEWMOD")  # not a condition name
    browser.find_element(By.ID, "save-rule").click()
    error = browser.find_element(By.CSS_SELECTOR, '[data-error="coercionCondition"]')
    _wait(browser, lambda d: error.is_displayed(), "the condition's problem beside it")
    assert "SendingApplicationEntityTitle" in error.text  # did you mean ...
    assert browser.find_element(By.ID, "coercionURI").get_attribute("value") == (
        "deidentify:RetainUIDsOption"
    )
    condition = browser.find_element(By.CSS_SELECTOR, ".row input[name=coercionCondition]")
    condition.clear()
    condition.send_keys("SendingApplicationEntityTitle=NEWMOD")
    browser.find_element(By.ID, "save-rule").click()
    _wait(browser, lambda d: "/rules/view" in d.current_url, "the new rule's page")
    assert "deidentify:RetainUIDsOption" in browser.find_element(By.ID, "entry").text

    def listed(driver: WebDriver) -> bool:
        driver.get(node.url + "/rules")
        return "deidentify-newmod" in driver.find_element(By.ID, "rules-table").text

    _wait(browser, listed, "the node to load the new rule")

    def column(index: int) -> list[str]:
        rows = browser.find_elements(By.CSS_SELECTOR, "#rules-table tbody tr")
        return [row.find_elements(By.TAG_NAME, "td")[index].text for row in rows]

    header = browser.find_element(By.CSS_SELECTOR, '#rules-table th[data-sort="1"]')
    header.click()
    assert column(1) == sorted(column(1))
    header.click()
    assert column(1) == sorted(column(1), reverse=True)
    browser.find_element(By.CSS_SELECTOR, '#rules-table th[data-sort="0"]').click()
    assert [int(p) for p in column(0)] == sorted(int(p) for p in column(0))
    browser.find_element(By.ID, "filter").send_keys("newmod")
    visible = [
        row
        for row in browser.find_elements(By.CSS_SELECTOR, "#rules-table tbody tr")
        if row.is_displayed()
    ]
    assert len(visible) == 1 and "deidentify-newmod" in visible[0].text

    browser.get(node.url + "/")
    before = _total(browser, "COERCION")
    source = tmp_path / "from-newmod.dcm"
    make_dataset(patient="DOE^JANE^Q").save_as(source, enforce_file_format=True)
    sent = dcmtk(
        "storescu", "-aet", "NEWMOD", "-aec", "COERCION", "127.0.0.1", node.served.port, source
    )
    assert sent.returncode == 0, sent.stderr
    [path] = stored(node.served.data)
    ds = dcmread(path)
    assert ds.get("PatientName") != "DOE^JANE^Q"
    assert ds.PatientIdentityRemoved == "YES"
    # The overview refreshes itself: no reload.
    _wait(browser, lambda d: _total(d, "COERCION") == before + 1, "the counter to move")

    browser.get(node.url + "/audit")
    browser.find_element(By.ID, "ae_title").send_keys("NEWMOD")
    browser.find_element(By.CSS_SELECTOR, "#audit-form button[type=submit]").click()

    def audited(driver: WebDriver) -> bool:
        rows = driver.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")
        return len(rows) == 1 and "deidentify-newmod" in rows[0].text and "0x0000" in rows[0].text

    _wait(browser, audited, "the object's audit line")


def test_rule_edited_disabled_and_deleted_in_the_browser(
    browser: WebDriver, node: ConsoleNode
) -> None:
    """Edit a rule's priority, disable it, delete it (confirmed): each reaches the node."""
    dn = "cn=deidentify-research-store,dicomAETitle=RESEARCH," + DEVICE
    _sign_in(browser, node)
    browser.get(node.url + "/rules/view?dn=" + quote(dn))
    browser.find_element(By.ID, "edit-rule").click()
    _wait(browser, lambda d: "/rules/edit" in d.current_url, "the edit form")
    assert browser.find_element(By.ID, "cn").get_attribute("readonly") is not None
    priority = browser.find_element(By.ID, "coercionPriority")
    assert priority.get_attribute("value") == "10"
    priority.clear()
    priority.send_keys("42")
    browser.find_element(By.ID, "save-rule").click()
    _wait(browser, lambda d: "saved=1" in d.current_url, "the rule's page after saving")

    def row(driver: WebDriver) -> list[str]:
        driver.get(node.url + "/rules")
        found = driver.find_elements(By.CSS_SELECTOR, f'#rules-table tr[data-dn="{dn}"] td')
        return [cell.text for cell in found]

    _wait(browser, lambda d: row(d)[:1] == ["42"], "the new priority loaded")
    browser.get(node.url + "/rules/view?dn=" + quote(dn))
    browser.find_element(By.ID, "toggle-rule").click()
    # The page reloads itself: its heading is read in one step, never from the old document.
    heading = "return document.querySelector('h1') && document.querySelector('h1').textContent"
    _wait(browser, lambda d: "(disabled)" in str(d.execute_script(heading)), "disabled")
    _wait(browser, lambda d: row(d)[-1:] == ["no"], "the node to see it disabled")
    browser.get(node.url + "/rules/view?dn=" + quote(dn))
    browser.find_element(By.ID, "delete-rule").click()
    alert = browser.switch_to.alert
    assert "deidentify-research-store" in alert.text
    alert.dismiss()  # not confirmed: nothing happens
    assert "/rules/view" in browser.current_url
    browser.find_element(By.ID, "delete-rule").click()
    browser.switch_to.alert.accept()
    _wait(browser, lambda d: d.current_url.endswith("/rules"), "the rules list after deleting")
    _wait(browser, lambda d: row(d) == [], "the node to drop the rule")


def test_preview_in_the_browser(browser: WebDriver, node: ConsoleNode, tmp_path: Path) -> None:
    """An admin uploads a file on the Preview page and sees each attribute's action and values."""
    source = tmp_path / "preview.dcm"
    make_dataset(patient="CANARY^BROWSER").save_as(source, enforce_file_format=True)
    _sign_in(browser, node)
    browser.get(node.url + "/preview")
    browser.find_element(By.ID, "preview-file").send_keys(str(source))
    Select(browser.find_element(By.ID, "called")).select_by_value("RESEARCH")
    browser.find_element(By.ID, "run-preview").click()
    result = browser.find_element(By.ID, "preview-result")
    _wait(browser, lambda d: result.is_displayed(), "the preview's result")
    assert "deidentify-research-store" in result.text
    rows = [
        [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in result.find_elements(By.CSS_SELECTOR, "table.preview tr")
    ]
    [name] = [row for row in rows if len(row) == 5 and row[1] == "PatientName"]
    assert name[0] == "(0010,0010)" and name[3] == "CANARY^BROWSER" and name[4] != name[3]
    # The file input is cleared: the page keeps no copy to send again.
    assert browser.find_element(By.ID, "preview-file").get_attribute("value") == ""
    assert stored(node.served.data) == []
    assert "CANARY" not in node.served.text()
