"""The web demo page (served by the API at `/`), driven in headless Chromium (Debian's package)."""

from __future__ import annotations

import shutil

import openai
import pytest

from tests.serve.serve_helpers import DEFAULT_MAX_TOKENS

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


# Keeps the body of every request the page sends, in `window.sent`.
RECORD_REQUESTS = """
window.sent = [];
const send = window.fetch;
window.fetch = (url, init) => { window.sent.push(JSON.parse(init.body)); return send(url, init); };
"""


def _ask(browser, question: str, turn: int) -> str:
    """Send `question` from the page and wait for its answer (the `turn`-th of the page)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element(By.ID, "prompt").send_keys(question)
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, 60).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-done='true']")) == turn
    )
    answer = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant, .msg.error")[-1]
    assert "error" not in answer.get_attribute("class"), answer.text
    return answer.text


def test_the_servers_answer_budget_applies_and_an_image_picked_later_is_sent(
    browser, api_server, image_folder
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(api_server.url + "/")
    tokens = browser.find_element(By.ID, "max-tokens")
    assert tokens.get_attribute("value") == "" and tokens.get_attribute("placeholder") == str(
        DEFAULT_MAX_TOKENS
    )
    browser.execute_script(RECORD_REQUESTS)

    # Untouched, the field leaves the budget to the server's --default-max-tokens.
    shown = _ask(browser, QUESTION, 1)
    assert "max_tokens" not in browser.execute_script("return window.sent[0];")
    client = openai.OpenAI(base_url=api_server.api, api_key="unused", max_retries=0)
    alone = client.chat.completions.create(
        model=api_server.model_id, messages=[{"role": "user", "content": QUESTION}], temperature=0
    )
    assert shown == alone.choices[0].message.content.strip() and shown

    # An image picked after the first question goes with the next one, and only with it.
    browser.find_element(By.ID, "image").send_keys(str(image_folder / "img1.png"))
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return imageUrl;") is not None)
    assert "next question" in browser.find_element(By.ID, "status").text
    _ask(browser, "And now?", 2)
    tokens.send_keys("3")
    _ask(browser, "Once more?", 3)
    second, third = browser.execute_script("return window.sent.slice(1);")
    url = browser.execute_script("return imageUrl;")
    assert second["messages"][2]["content"] == [
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": "And now?"},
    ]
    assert third["messages"][2] == second["messages"][2] and third["messages"][4]["content"] == "Once more?"
    assert third["max_tokens"] == 3
