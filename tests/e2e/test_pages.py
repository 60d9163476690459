"""The pages in a real browser (headless Chromium, tests/e2e/browser.py) against the live
stack: the upload page, the request page on both profiles, /docs, and the request page behind
API keys. Each test saves a screenshot in its own temp folder.

The request page must never make the browser fetch an input URL: the image host counts every
request it gets, and none may come from the page.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from local_profile import sample_images
from local_profile.image_host import ImageHost
from local_profile.recipes import Stack
from shared.domain.access import new_api_key
from tests.e2e.browser import chromium, console_errors, wait_until
from tests.e2e.helpers import upload, wait_until_finished

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


@pytest.fixture
def page(browser: WebDriver, tmp_path: Path) -> Iterator[WebDriver]:
    browser.get_log("browser")  # what earlier tests left in the console
    yield browser
    browser.save_screenshot(str(tmp_path / "screenshot.png"))


@pytest.fixture(scope="module")
def image_host() -> Iterator[ImageHost]:
    files = {
        f"/photo-{n}.jpg": (sample_images.photo_jpeg(640, 480, 70 + 5 * n, seed=n), "image/jpeg")
        for n in range(4)
    }
    files["/logo.png"] = (sample_images.transparent_png(240, 160, seed=9), "image/png")
    with ImageHost(files, latency=0.1, hold={"/slow.jpg"}) as host:
        host.files["/slow.jpg"] = files["/photo-0.jpg"]
        yield host


def products_csv(host: ImageHost) -> str:
    return (
        "Serial Number,Product Name,Input Image Urls\n"
        f'CH-1,Oak chair,"{host.url("/photo-0.jpg")},{host.url("/photo-1.jpg")}"\n'
        f"LA-2,Desk lamp,{host.url('/logo.png')}\n"
        f'TB-3,Table,"{host.url("/photo-2.jpg")},{host.url("/gone.jpg")}"\n'
        f"SH-4,Shelf,{host.url('/photo-3.jpg')}\n"
    )


def cards(driver: WebDriver, state: str) -> list[object]:
    return list(driver.find_elements(By.CSS_SELECTOR, f"#images article[data-state='{state}']"))


def assert_finished_request_page(driver: WebDriver, outputs_origin: str) -> None:
    wait_until(driver, lambda d: d.find_element(By.ID, "status").text == "completed")
    progress = driver.find_element(By.ID, "progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == "6"
    assert (
        "100% · 6 of 6 images settled: 5 done, 1 failed"
        in driver.find_element(By.ID, "progress-text").text
    )
    # One thumbnail per done image, each loaded from the outputs bucket, none broken.
    wait_until(driver, lambda d: len(cards(d, "done")) == 5)
    thumbnails = driver.find_elements(By.CSS_SELECTOR, "#images img")
    assert len(thumbnails) == 5
    assert all(img.get_attribute("src").startswith(outputs_origin) for img in thumbnails)
    wait_until(
        driver,
        lambda d: all(
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
            for img in thumbnails
        ),
    )
    (failed,) = cards(driver, "failed")
    assert "http_error" in failed.text and "gone.jpg" in failed.text  # type: ignore[attr-defined]
    quality = driver.find_element(By.CSS_SELECTOR, "#images article[data-id='0000000-00']").text
    assert "jpeg q70 → jpeg q35" in quality and "640 \u00d7 480 px" in quality
    assert driver.find_element(By.ID, "total-failed").text == "1"
    assert driver.find_element(By.ID, "bytes-before").text.endswith("KB")
    assert driver.find_element(By.ID, "csv-link").get_attribute("href").startswith(outputs_origin)


def test_the_request_page_shows_each_output_and_the_failed_images_error(
    page: WebDriver, base_url: str, image_host: ImageHost, profile: Stack, tmp_path: Path
) -> None:
    answer = upload(base_url, products_csv(image_host).encode(), f"{base_url}/webhook")
    request_id = answer.json()["request_id"]
    wait_until_finished(base_url, request_id)
    hits_before = sum(image_host.hits.values())

    page.get(f"{base_url}/requests/{request_id}")
    outputs_origin = profile.env["STORAGE_EMULATOR_HOST"]
    assert_finished_request_page(page, outputs_origin)
    # The webhook's attempt is listed once it has been made.
    wait_until(page, lambda d: "delivered" in d.find_element(By.ID, "webhook").text, 30)
    assert sum(image_host.hits.values()) == hits_before  # no input URL was fetched by the page
    assert console_errors(page) == []
    page.save_screenshot(str(tmp_path / "request-page.png"))  # as docs/request-page.png shows it

    page.find_element(By.CSS_SELECTOR, "#filters button[data-state='failed']").click()
    wait_until(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#images article")) == 1)
    assert len(cards(page, "failed")) == 1


def test_the_progress_bar_moves_to_100_while_the_request_runs(
    page: WebDriver, gateway_url: str, image_host: ImageHost
) -> None:
    csv_text = products_csv(image_host).replace("/photo-3.jpg", "/slow.jpg")
    request_id = upload(gateway_url, csv_text.encode()).json()["request_id"]
    page.get(f"{gateway_url}/requests/{request_id}")
    progress = page.find_element(By.ID, "progress")
    # The held image keeps the request running: the bar stops short of the end...
    wait_until(page, lambda d: progress.get_attribute("value") == "5")
    assert page.find_element(By.ID, "status").text == "in progress"
    assert progress.get_attribute("max") == "6"
    # ...and, without a reload, reaches it once the last image arrives.
    image_host.release()
    wait_until(page, lambda d: progress.get_attribute("value") == "6")
    wait_until(page, lambda d: d.find_element(By.ID, "status").text == "completed")
    assert progress.get_attribute("data-percent") == "100"


def test_the_upload_page_lists_a_bad_csvs_problems_by_line_and_column(
    page: WebDriver, gateway_url: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "Serial Number,Product Name,Input Image Urls\n1,,https://203.0.113.9/a.jpg\n1,Lamp,\n"
    )
    page.get(f"{gateway_url}/")
    page.find_element(By.ID, "file").send_keys(str(bad))
    page.find_element(By.ID, "submit").click()
    table = wait_until(page, lambda d: d.find_elements(By.ID, "problems-table"))[0]
    rows = [
        [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    assert ["2", "Product Name", "product name is empty"] in rows
    assert {(line, column) for line, column, _ in rows} >= {
        ("3", "Serial Number"),
        ("3", "Input Image Urls"),
    }
    assert "the CSV has 3 problem(s)" in page.find_element(By.ID, "problems").text
    assert page.current_url == f"{gateway_url}/"


def test_the_upload_page_submits_a_csv_and_lands_on_its_request_page(
    page: WebDriver, gateway_url: str, image_host: ImageHost, tmp_path: Path
) -> None:
    good = tmp_path / "products.csv"
    good.write_text(products_csv(image_host))
    page.get(f"{gateway_url}/")
    page.find_element(By.ID, "file").send_keys(str(good))
    page.find_element(By.ID, "submit").click()
    wait_until(page, lambda d: "/requests/" in d.current_url)
    request_id = page.current_url.rsplit("/", 1)[-1]
    assert requests.get(f"{gateway_url}/status/{request_id}", timeout=10).status_code == 200
    assert page.find_element(By.ID, "request-id").text == request_id
    wait_until(page, lambda d: d.find_element(By.ID, "status").text == "completed")


def test_docs_renders_every_operation_from_the_projects_own_swagger_ui(
    page: WebDriver, gateway_url: str
) -> None:
    page.get(f"{gateway_url}/docs")
    operations = wait_until(
        page, lambda d: len(found := d.find_elements(By.CSS_SELECTOR, ".opblock-summary")) >= 3
        and found,
    )  # fmt: skip
    paths = {op.find_element(By.CSS_SELECTOR, ".opblock-summary-path").text for op in operations}
    assert paths >= {"/upload", "/status/{request_id}", "/requests/{request_id}/webhook/resend"}
    assert page.find_element(By.CSS_SELECTOR, ".info .title").text.startswith("imgsvc")
    assert console_errors(page) == []


def test_behind_api_keys_the_page_shows_a_request_to_its_owner_only(
    page: WebDriver, live: Stack, image_host: ImageHost
) -> None:
    owner, other = new_api_key("owner"), new_api_key("other")
    url = live.start_gateway(
        name="gateway-pages",
        extra_env={"API_KEYS": f"{owner.entry},{other.entry}", "UPLOAD_RATE_LIMIT": "off"},
    )
    try:
        answer = requests.post(
            f"{url}/upload",
            files={"file": ("p.csv", products_csv(image_host).encode(), "text/csv")},
            headers={"Authorization": f"Bearer {owner.key}"},
            timeout=30,
        )
        request_id = answer.json()["request_id"]
        page.get(f"{url}/requests/{request_id}")
        page.execute_script("sessionStorage.clear()")
        page.refresh()
        wait_until(page, lambda d: "needs an API key" in d.find_element(By.ID, "problem").text)
        assert not page.find_element(By.ID, "overview").is_displayed()
        assert page.find_elements(By.CSS_SELECTOR, "#images article") == []

        def use_key(key: str) -> None:
            field = page.find_element(By.ID, "api-key")
            field.clear()
            field.send_keys(key)
            page.find_element(By.CSS_SELECTOR, "#key-form button").click()

        # The page opened its key box by itself when the API asked for a key.
        assert page.find_element(By.CSS_SELECTOR, "details.key").get_attribute("open") is not None
        use_key(other.key)
        wait_until(page, lambda d: "No request" in d.find_element(By.ID, "problem").text)
        assert not page.find_element(By.ID, "overview").is_displayed()
        use_key(owner.key)
        wait_until(page, lambda d: d.find_element(By.ID, "status").text == "completed")
        assert len(cards(page, "done")) == 5
        # The key lives in this tab only, never in the address or a cookie.
        assert owner.key not in page.current_url and page.get_cookies() == []
    finally:
        page.execute_script("sessionStorage.clear()")
        live.stop("gateway-pages")
