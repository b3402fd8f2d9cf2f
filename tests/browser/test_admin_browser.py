"""The admin in a real browser (Debian chromium driven by selenium) against a live test server.

Skipped with a message where chromium or chromedriver is not installed; CI installs both.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from modeling import datasets as ds
from recoapi.catalog.services import data_import
from recoapi.recommendations.engine import registry
from recoapi.recommendations.services import model_version_sync
from tests.conftest import Pipeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "output" / "screenshots"

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="chromium and chromedriver are not installed (apt-get install chromium "
                                       "chromium-driver)")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,1800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def live_service(settings, transactional_db, pipeline: Pipeline, models_copy: Path, tmp_path: Path) -> Pipeline:
    settings.RECO_DATA_PATH = pipeline.raw
    settings.RECO_PROCESSED_DIR = tmp_path / "processed"
    settings.RECO_MODELS_DIR = models_copy
    settings.RECO_ACTIVE_CHECK_SECONDS = 0.0
    data_import(source="amazon2018", path=pipeline.raw, processed_dir=tmp_path / "processed")
    get_user_model().objects.create_superuser(username="staff", email="", password="browser-pass-123")
    model_version_sync()
    registry.reset()
    yield pipeline
    registry.reset()


def test_staff_logs_in_and_sees_a_shoppers_history_and_recommendations(live_server, browser,
                                                                       live_service: Pipeline) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)

    inter = live_service.data.interactions
    shopper = str(inter[ds.USER_ID].iloc[0])
    latest = inter[inter[ds.USER_ID] == shopper].sort_values(ds.TIMESTAMP).iloc[-1]
    title = live_service.data.items.set_index(ds.ITEM_ID).loc[latest[ds.ITEM_ID], ds.TITLE]

    browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys("staff")
    browser.find_element(By.NAME, "password").send_keys("browser-pass-123")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(ec.title_contains("Site administration"))

    browser.get(f"{live_server.url}/admin/catalog/shopper/?q={shopper}")
    wait.until(ec.element_to_be_clickable((By.LINK_TEXT, shopper))).click()
    wait.until(ec.presence_of_element_located((By.ID, "reco-strategy")))
    page = browser.page_source
    assert "strategy <b>two_tower</b>" in page
    assert title in page  # the latest product of the history, by title
    tables = browser.find_elements(By.CSS_SELECTOR, "table.reco-table")
    assert len(tables) == 2
    assert len(tables[0].find_elements(By.CSS_SELECTOR, "tbody tr")) == 10  # top-10
    assert "because of" in tables[0].text.lower()  # each product's reason (explain=true; headers shown in capitals)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "admin_shopper.png"))

    product = str(live_service.data.items[ds.ITEM_ID].iloc[0])
    browser.get(f"{live_server.url}/admin/catalog/product/{product}/change/")
    assert "Nearest products" in browser.page_source
    browser.get(f"{live_server.url}/admin/recommendations/modelversion/")
    row = browser.find_element(By.LINK_TEXT, live_service.version).find_element(By.XPATH, "./ancestor::tr")
    assert "HR@10" in browser.page_source and row.find_element(By.CSS_SELECTOR, "img[alt=True]")


def _log_in(browser, live_server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys("staff")
    browser.find_element(By.NAME, "password").send_keys("browser-pass-123")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 30).until(ec.title_contains("Site administration"))


def test_shopper_list_shows_interaction_count_and_last_activity(live_server, browser,
                                                                  live_service: Pipeline) -> None:
    """Issue 12: the shopper list has each shopper's interaction count and latest activity."""
    from selenium.webdriver.common.by import By

    _log_in(browser, live_server)
    inter = live_service.data.interactions
    shopper = str(inter[ds.USER_ID].iloc[0])
    mine = inter[inter[ds.USER_ID] == shopper]
    browser.get(f"{live_server.url}/admin/catalog/shopper/?q={shopper}")
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#result_list thead th")]
    assert "INTERACTIONS" in [h.upper() for h in headers] and "LAST ACTIVITY" in [h.upper() for h in headers]
    row = browser.find_element(By.LINK_TEXT, shopper).find_element(By.XPATH, "./ancestor::tr")
    assert row.find_element(By.CSS_SELECTOR, "td.field-interaction_count").text == str(len(mine))
    last = row.find_element(By.CSS_SELECTOR, "td.field-last_activity").text
    latest = datetime.fromtimestamp(int(mine[ds.TIMESTAMP].max()), UTC)
    assert str(latest.year) in last and latest.strftime("%B")[:3] in last  # e.g. "March 4, 2023, 10:15 a.m."
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "admin_shopper_list.png"))


def test_deleting_the_active_model_version_is_refused_with_the_reason(live_server, browser,
                                                                      live_service: Pipeline) -> None:
    """Issue 12: neither the change page's Delete nor the bulk delete removes the active version."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from recoapi.recommendations.models import ModelVersion

    wait = WebDriverWait(browser, 30)
    version = live_service.version
    refusal = f"Model {version} is the active model and cannot be deleted"
    _log_in(browser, live_server)

    browser.get(f"{live_server.url}/admin/recommendations/modelversion/{version}/change/")
    browser.find_element(By.CSS_SELECTOR, "a.deletelink").click()
    message = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist li.error")))
    assert refusal in message.text and "Activate another version first" in message.text
    assert browser.current_url.endswith(f"/modelversion/{version}/change/")

    browser.get(f"{live_server.url}/admin/recommendations/modelversion/")
    row = browser.find_element(By.LINK_TEXT, version).find_element(By.XPATH, "./ancestor::tr")
    row.find_element(By.CSS_SELECTOR, "input.action-select").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("delete_selected")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    message = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist li.error")))
    assert refusal in message.text
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "admin_refused_delete.png"))
    assert ModelVersion.objects.filter(version=version, is_active=True).exists()


def _api(live_server, path: str, token: str | None = None, body: object | None = None) -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(f"{live_server.url}{path}", method="POST" if body is not None else "GET",
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Token {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_an_experiment_runs_from_the_admin_and_the_dashboard_plots_its_traffic(live_server, browser,
                                                                               live_service: Pipeline) -> None:
    """Issue 16: start an A/B test, answers and clicks through the API, results, stop; the dashboard's plots
    and preview box."""
    from rest_framework.authtoken.models import Token
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from recoapi.recommendations import experiments, impressions
    from recoapi.recommendations.models import Experiment, ExperimentArm

    wait = WebDriverWait(browser, 30)
    experiment = Experiment.objects.create(name="ranker-vs-popular")
    ExperimentArm.objects.create(experiment=experiment, name="control", share=50, setting="served")
    ExperimentArm.objects.create(experiment=experiment, name="popular", share=50, setting="popular")
    experiments.forget()
    _log_in(browser, live_server)
    browser.get(f"{live_server.url}/admin/recommendations/experiment/{experiment.pk}/change/")
    browser.find_element(By.CSS_SELECTOR, "button[name=start]").click()
    message = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist li.success")))
    assert "is running" in message.text

    with impressions.buffer._lock:  # lists other tests of this process left unwritten
        impressions.buffer._pending.clear()
    token = Token.objects.create(user=get_user_model().objects.get(username="staff")).key
    shoppers = sorted(live_service.data.interactions[ds.USER_ID].astype(str).unique())[:60]
    answer = _api(live_server, f"/recommendations?users={','.join(shoppers)}&k=10")["recommendations"]
    arms = {entry["experiment"]["arm"] for entry in answer.values()}
    assert arms == {"control", "popular"}
    impressions.buffer.flush()  # the test server's lists (the writer is manual in tests)
    clicks = [{"user": user, "item": entry["items"][0]["item_id"], "event": "view",
               "recommendation_id": entry["recommendation_id"]}
              for i, (user, entry) in enumerate(sorted(answer.items())) if i % 3 == 0]
    assert _api(live_server, "/events", token, clicks)["stored"] == len(clicks)

    browser.get(f"{live_server.url}/admin/recommendations/experiment/{experiment.pk}/change/")
    table = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.experiment-results")))
    assert len(table.find_elements(By.CSS_SELECTOR, "tr")) == 3  # header, control, popular
    assert "Newcombe" in table.text or "NEWCOMBE" in table.text
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "admin_experiment.png"))
    browser.find_element(By.CSS_SELECTOR, "button[name^=stop-]").click()  # the first arm: control
    message = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist li.success")))
    assert "all traffic goes to arm control" in message.text

    browser.get(f"{live_server.url}/admin/")
    browser.find_element(By.CSS_SELECTOR, "#dashboard-link a").click()
    wait.until(ec.presence_of_element_located((By.ID, "chart-events")))
    assert browser.find_element(By.ID, "count-lists").text == str(len(shoppers))
    for panel in ("events", "strategies", "latency", "ctr", "arms", "offline", "coverage"):
        assert browser.find_elements(By.CSS_SELECTOR, f"#chart-{panel} svg"), panel  # a plot, not "no data"
    assert not browser.find_elements(By.CSS_SELECTOR, "script[src^=http], link[href^=http]")  # no CDN

    browser.find_element(By.NAME, "users").send_keys(shoppers[0])
    browser.find_element(By.ID, "preview-submit").click()
    rows = wait.until(ec.presence_of_all_elements_located((By.CSS_SELECTOR, "table.preview-answer tbody tr")))
    assert len(rows) == 10
    browser.set_window_size(1400, 3600)
    assert browser.save_screenshot(str(SCREENSHOTS / "admin_dashboard.png"))
