"""The web demo page (served by the API at `/`), driven in headless Chromium (Debian's package)."""

from __future__ import annotations

import shutil

import openai
import pytest

QUESTION = "What colour is the picture?"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None, reason="needs Debian's chromium and chromium-driver"
)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1100,800",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_upload_an_image_ask_and_read_the_streamed_answer(browser, api_server, image_folder, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(api_server.url + "/")
    assert api_server.model_id in browser.title
    browser.find_element(By.ID, "image").send_keys(str(image_folder / "img2.png"))
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "preview").get_attribute("src").startswith("data:")
    )
    tokens = browser.find_element(By.ID, "max-tokens")
    tokens.clear()
    tokens.send_keys("10")
    # Count the answer's updates in the page: more than one means it arrived streamed.
    browser.execute_script(
        "window.updates = 0; new MutationObserver(() => window.updates++)"
        ".observe(document.getElementById('log'), {subtree: true, characterData: true, childList: true});"
    )
    browser.find_element(By.ID, "prompt").send_keys(QUESTION)
    browser.find_element(By.ID, "send").click()
    answer = WebDriverWait(browser, 60).until(
        lambda d: d.find_element(
            By.CSS_SELECTOR, ".msg.assistant[data-done='true'], .msg.error[data-done='true']"
        )
    )
    browser.save_screenshot(str(tmp_path / "demo.png"))
    assert "error" not in answer.get_attribute("class"), answer.text
    shown = answer.text

    client = openai.OpenAI(base_url=api_server.api, api_key="unused", max_retries=0)
    url = browser.execute_script("return imageUrl;")
    expected = (
        client.chat.completions.create(
            model=api_server.model_id,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": url}},
                        {"type": "text", "text": QUESTION},
                    ],
                }
            ],
            max_tokens=10,
            temperature=0,
        )
        .choices[0]
        .message.content
    )
    assert shown == expected.strip() and shown
    # The two bubbles, then more than one piece of the answer.
    assert browser.execute_script("return window.updates;") > 3
    assert browser.find_element(By.ID, "status").text == "done"

    # A second turn keeps the conversation (the image stays with the first question).
    browser.find_element(By.ID, "prompt").send_keys("And the shape?")
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, 60).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-done='true']")) == 2
    )
    assert browser.execute_script("return messages.length;") == 4
