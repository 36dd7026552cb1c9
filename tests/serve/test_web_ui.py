"""The web page for endpoint consumers (/ui) and the rendered contract (/docs) in a real headless
Chromium, against a real server with a bearer token: real files chosen, the sentence typed,
Generate clicked, the mp4 played; the server's refusals shown.

Without `chromium` these tests skip, and fail under INTERACTAVATAR_REQUIRE_BROWSER=1 (CI).
INTERACTAVATAR_UI_SCREENSHOT=PATH also saves the page after the generation there (the README's
docs/images/web-ui.png is made so).
"""

import os

import pytest
from helpers.browser import Chromium, chromium_or_skip
from PIL import Image

from interactavatar.config import MODES

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHROMIUM = chromium_or_skip()
SCREENSHOT_ENV = "INTERACTAVATAR_UI_SCREENSHOT"
# The status lines the page shows, recorded as they change (a generation may be over before any poll).
RECORD_STATUS = """
window.statusSeen = [];
new MutationObserver(() => window.statusSeen.push(document.getElementById('status').textContent))
    .observe(document.getElementById('status'), {childList: true, characterData: true, subtree: true});
"""
VIDEO_OR_ERROR = """(() => {
  const video = document.getElementById('video');
  return document.getElementById('error').textContent || (video.readyState >= 1 && video.duration > 0);
})()"""

# The mean brightness (0 to 255) of the frame the video shows, read back through a canvas.
FRAME_BRIGHTNESS = """(() => {
  const video = document.getElementById('video'), canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const context = canvas.getContext('2d');
  context.drawImage(video, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0;
  for (let i = 0; i < pixels.length; i += 4) sum += (pixels[i] + pixels[i + 1] + pixels[i + 2]) / 3;
  return sum / (pixels.length / 4);
})()"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium"))
    yield chromium
    chromium.close()


def open_form(browser, server, image, audio, text: str, token: str, steps: str = "4") -> None:
    """A fresh /ui with its form filled in as a user would."""
    browser.open(f"{server.url}/ui")
    browser.wait_for("document.getElementById('mode').options.length", "the modes from /openapi.json", 30)
    browser.choose_files("#image", image)
    browser.choose_files("#audio", audio)
    browser.type_into("#text", text)
    browser.type_into("#steps", steps)
    browser.type_into("#token", token)


def test_the_page_generates_and_plays_a_video(guarded_server, media, browser, tmp_path):
    files = media["files"]
    open_form(browser, guarded_server, files["image"], files["audio"], "The man lifts the red cup",
              guarded_server.token)
    assert browser.evaluate("[...document.getElementById('mode').options].map(o => o.value)") == list(MODES)
    browser.evaluate(RECORD_STATUS)
    browser.click("#generate")
    browser.wait_for(VIDEO_OR_ERROR, "a playable video or an error")
    assert browser.evaluate("document.getElementById('error').textContent") == ""
    video = browser.evaluate("""(() => { const v = document.getElementById('video');
        return {readyState: v.readyState, duration: v.duration, blob: v.src.startsWith('blob:'),
                error: v.error && v.error.message, hidden: v.hidden}; })()""")
    assert video["readyState"] >= 1 and video["duration"] > 0 and video["blob"], video
    assert video["error"] is None and not video["hidden"], video
    seen = browser.evaluate("window.statusSeen")
    assert any(line.startswith("sending the request (") for line in seen), seen  # progress with elapsed time
    assert seen[-1].startswith("done in "), seen
    # Played to its end (muted: the autoplay policy), its last frame holds decoded pixels, not black.
    browser.evaluate("(() => { const v = document.getElementById('video'); v.muted = true; return v.play(); })()")
    browser.wait_for("document.getElementById('video').ended", "the video played to its end", 60)
    assert browser.evaluate(FRAME_BRIGHTNESS) > 10
    screenshot = browser.screenshot(tmp_path / "web-ui.png")
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    if os.environ.get(SCREENSHOT_ENV):
        # 256 colours: a page of flat colours stays sharp, and the file small enough for the README.
        Image.open(screenshot).convert("RGB").quantize(256).save(os.environ[SCREENSHOT_ENV], optimize=True)


def test_the_page_shows_the_servers_refusals(guarded_server, media, browser):
    files = media["files"]
    open_form(browser, guarded_server, files["image"], files["audio"], "The man waves", "not-the-token")
    browser.click("#generate")
    error = browser.wait_for("document.getElementById('error').textContent", "the 401's message", 60)
    assert error == "HTTP 401: authorization: missing or wrong bearer token"

    # A WAV where the image belongs, with the right token.
    open_form(browser, guarded_server, files["audio"], files["audio"], "The man waves", guarded_server.token)
    browser.click("#generate")
    error = browser.wait_for("document.getElementById('error').textContent", "the 400's message", 60)
    assert error.startswith("HTTP 400: image: "), error
    assert browser.evaluate("document.getElementById('video').hidden")


def test_the_docs_page_renders_the_contract(guarded_server, browser):
    browser.open(f"{guarded_server.url}/docs")
    headings = browser.wait_for("[...document.querySelectorAll('h3')].map(h => h.textContent)", "the operations", 30)
    assert "POST/v2/models/{model_name}/infer" in headings
    assert "GET/progress/{request_id}" in headings
    assert browser.evaluate("document.querySelectorAll('#schemas details').length") >= 10
