"""The HTML explorer in a real headless browser (Debian's chromium + chromedriver, driven
by selenium), for a run judged by the STAND-IN judge (tests/helpers/judge.py).

Needs the system `chromium` and `chromedriver` (`make test` installs them with apt-get
when missing). The screenshot stays in the test's tmp folder (explorer.png)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.helpers.judge import BENCH, make_run, standin_verdict
from wmsub.score.judge import run_shard, shard_dir
from wmsub.score.report import run_report

SCRIPT_PROMPT = 'Push the cup <script>window.__pwned = "prompt"</script> off the table'
IMG_ANSWER = 'No. <img src=x onerror="window.__pwned = \'answer\'"> nothing moves by itself'
JUDGED = [s for s, _ in BENCH if s != "clip_a"]


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, ("chromium and chromedriver are needed (Debian: apt-get install chromium "
                                 "chromium-driver; `make test` does it)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800",
                "--allow-file-access-from-files", "--host-resolver-rules=MAP * ~NOTFOUND"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture
def explorer(tmp_path):
    run_dir, cfg = make_run(tmp_path, shards=2, missing=("clip_a",), images=True,
                            instructions={"clip-b": SCRIPT_PROMPT})
    for i in range(2):
        run_shard(str(run_dir), i)
    # a judge answer holding markup: the page must show it as text
    shard = next(i for i in range(2) if "clip_c" in json.loads(
        (shard_dir(run_dir, i) / "result.json").read_text())["preds"])
    result_path = shard_dir(run_dir, shard) / "result.json"
    result = json.loads(result_path.read_text())
    result["preds"]["clip_c"]["physical_laws"][0] = IMG_ANSWER
    result_path.write_text(json.dumps(result))
    run_report(str(run_dir))
    return run_dir / "report" / "index.html"


def visible_cards(driver) -> list:
    from selenium.webdriver.common.by import By
    return [c for c in driver.find_elements(By.CSS_SELECTOR, "article.card") if c.is_displayed()]


def choose(driver, select_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    Select(driver.find_element(By.ID, select_id)).select_by_value(value)


def test_explorer_in_a_real_browser(explorer, tmp_path):
    from selenium.webdriver.common.by import By
    driver = browser()
    try:
        driver.get(explorer.as_uri())
        cards = driver.find_elements(By.CSS_SELECTOR, "article.card")
        assert len(cards) == len(JUDGED) == len(visible_cards(driver))
        assert driver.find_element(By.ID, "shown").text == f"{len(JUDGED)} of {len(JUDGED)} shown"

        # nothing from the benchmark or the judge ran; both texts are shown as text
        assert driver.execute_script("return window.__pwned === undefined")
        page_text = driver.find_element(By.TAG_NAME, "body").text
        assert SCRIPT_PROMPT in page_text
        assert driver.find_elements(By.CSS_SELECTOR, "article.card img[src='x']") == []
        clip_c = next(c for c in cards if "clip_c" in c.text)
        answers = [p.get_attribute("textContent") for p in clip_c.find_elements(By.CSS_SELECTOR, "pre.answer")]
        assert IMG_ANSWER in answers

        # filters: by domain, then by a failed question (counts from the stand-in's rule)
        natural = [s for s, d in BENCH if d == "natural" and s in JUDGED]
        choose(driver, "f-domain", "natural")
        assert len(visible_cards(driver)) == len(natural) == 2
        assert driver.find_element(By.ID, "shown").text == f"2 of {len(JUDGED)} shown"
        choose(driver, "f-domain", "")
        failed_mass = [s for s in JUDGED if not standin_verdict(s)[1][1]]
        choose(driver, "f-failed", "mass")
        assert sorted(c.find_element(By.CSS_SELECTOR, ".stem").text for c in visible_cards(driver)) == \
            sorted(failed_mass)
        choose(driver, "f-failed", "")

        # sort by score, highest first
        choose(driver, "f-sort", "score-desc")
        scores = [float(c.get_attribute("data-score")) for c in visible_cards(driver)]
        assert scores == sorted(scores, reverse=True) and len(scores) == len(JUDGED)

        # every video element points at an existing mp4 of the output folder; thumbnails load
        videos = driver.find_elements(By.CSS_SELECTOR, "article.card video")
        assert len(videos) == len(JUDGED)
        for v in videos:
            path = Path(unquote(urlparse(v.get_property("src")).path))
            assert path.suffix == ".mp4" and path.is_file() and path.parent.name == "outputs"
            assert Path(unquote(urlparse(v.get_property("poster")).path)).is_file()
        assert driver.execute_script(
            "return Array.from(document.querySelectorAll('article.card img')).every(i => i.naturalWidth > 0)")
        # the per-domain chart shows too, and nothing comes from the network: every link is
        # relative (and the browser can resolve no host name: a fetch would be a console error)
        chart = driver.find_element(By.CSS_SELECTOR, "img[alt='scores per domain']")
        assert driver.execute_script("return arguments[0].naturalWidth", chart) > 0
        links = driver.execute_script(
            "return Array.from(document.querySelectorAll('[src],[href],[poster]')).flatMap("
            "e => ['src', 'href', 'poster'].map(a => e.getAttribute(a)).filter(v => v !== null))")
        assert links and not [u for u in links if "://" in u or u.startswith("//")], links
        assert driver.find_elements(By.CSS_SELECTOR, "link, script[src], iframe") == []

        driver.save_screenshot(str(tmp_path / "explorer.png"))
        driver.execute_script("document.getElementById('cards').scrollIntoView()")
        driver.save_screenshot(str(tmp_path / "explorer-cards.png"))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
    finally:
        driver.quit()
