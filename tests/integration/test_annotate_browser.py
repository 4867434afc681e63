"""The annotation page in a real headless Chromium (Debian's chromium + chromium-driver, driven
by Selenium): sign in with a token, rank a task with the keyboard, submit, and find the judgement
stored. Also writes docs/images/annotation.png when RLHF_SCREENSHOT is set."""

import json
import os
import shutil
import threading
import time

import pytest

from preference_data.annotation.server import make_server
from preference_data.annotation.store import AnnotationStore

pytestmark = pytest.mark.slow

TASKS = [
    {
        "id": "t1",
        "prompt": "Tell me about the red fox.",
        "responses": [
            "Whatever. Figure it out.",
            "The blue car is fast.",
            "Of course! The red fox is shy and alert. It hunts at night. Thanks for asking.",
        ],
    },
    {
        "id": "t2",
        "prompt": "Describe the green kite, please.",
        "responses": ["The green kite flies high in the wind.", "No."],
    },
]


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, (
        "the browser test needs Debian's chromium and chromium-driver "
        "(`make test` installs them: apt-get install chromium chromium-driver)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,800"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def _wait(condition, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the page")


def test_sign_in_rank_with_keys_and_submit(tmp_path):
    from selenium.webdriver.common.by import By

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(t) + "\n" for t in TASKS))
    store = AnnotationStore(tmp_path / "a.sqlite")
    store.import_tasks(tasks)
    token = store.add_annotator("alice")
    server = make_server(store, port=0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = _browser()
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/")
        browser.find_element(By.ID, "token").send_keys(token + "\n")
        _wait(lambda: browser.find_element(By.ID, "prompt").text == TASKS[0]["prompt"])
        if os.environ.get("RLHF_SCREENSHOT"):
            browser.save_screenshot(os.environ["RLHF_SCREENSHOT"])
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys("3")  # the polite, on-topic reply is the best
        body.send_keys("1")  # then the rude one; the off-topic one is last
        body.send_keys("\n")
        _wait(lambda: browser.find_element(By.ID, "prompt").text == TASKS[1]["prompt"])
        _wait(lambda: browser.find_element(By.ID, "progress").text.startswith("1 judged"))
    finally:
        browser.quit()
        server.shutdown()
        server.server_close()
    assert store.count_judgements() == 1
    path = tmp_path / "out.jsonl"
    store.export(path, "ranked")
    record = json.loads(path.read_text())
    assert record["annotator"] == "alice" and record["ranks"] == [1, 2, 0]
