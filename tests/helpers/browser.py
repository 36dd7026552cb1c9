"""A real headless Chromium (Debian's `chromium`), driven over its DevTools protocol, for the tests of
the endpoint's web page.

The DevTools protocol over websocket-client (already a dependency, through kubernetes) rather than
Selenium: it needs no chromedriver matched to the browser's version and no further Python
package, and the tests need only a handful of its methods (navigate, evaluate, set a file input,
type, click, screenshot). Chromium runs as the machine's user, root on CI, hence --no-sandbox;
the other flags keep it from reaching the network on its own.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import websocket

from interactavatar.train.engine import free_port

from .processes import stop

REQUIRE_ENV = "INTERACTAVATAR_REQUIRE_BROWSER"
MISSING = "no `chromium` on PATH: apt-get install -y chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--mute-audio", "--remote-debugging-address=127.0.0.1")


def chromium_or_skip() -> str | None:
    """The chromium executable. Without one the calling test module is skipped (called at its top,
    before any server starts), unless $INTERACTAVATAR_REQUIRE_BROWSER is 1 (CI, where a browser test
    must not pass by skipping): then None, and each test that launches it fails (`Chromium`)."""
    path = shutil.which("chromium")
    if path is None and os.environ.get(REQUIRE_ENV) != "1":
        pytest.skip(MISSING, allow_module_level=True)
    return path


class Chromium:
    """One headless Chromium with one page, its profile in `folder`, its output in folder/chromium.log."""

    def __init__(self, executable: str | None, folder: Path, width: int = 1100, height: int = 860,
                 timeout_s: float = 60.0):
        if executable is None:
            pytest.fail(f"{MISSING} ({REQUIRE_ENV}=1 requires the browser tests to run)", pytrace=False)
        port = free_port()
        self.folder = folder
        self._log = open(folder / "chromium.log", "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--remote-debugging-port={port}", f"--user-data-dir={folder / 'profile'}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=self._log, stderr=subprocess.STDOUT)
        self.events: list[dict] = []  # console messages and uncaught exceptions, for failure messages
        self._ids = itertools.count(1)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                         if t["type"] == "page"]
                if pages:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"chromium did not start:\n{(folder / 'chromium.log').read_text()[-2000:]}")
            time.sleep(0.2)
        # No Origin header: Chromium refuses DevTools connections from origins it was not told to allow.
        self._socket = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=timeout_s,
                                                   suppress_origin=True)
        for domain in ("Page", "Runtime", "DOM"):
            self.send(f"{domain}.enable")

    def send(self, method: str, **params) -> dict:
        """One DevTools command; its result (events that arrive meanwhile are kept in `events`)."""
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]
            if message.get("method") in ("Runtime.consoleAPICalled", "Runtime.exceptionThrown"):
                self.events.append(message)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout_s: float = 120.0, interval_s: float = 0.2):
        """Polls `expression` until it is truthy and returns its value. The deadline only keeps a
        broken page from hanging the suite; nothing is asserted about how long it took."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"the page never showed {what}; its console: {self.events[-10:]}")
            time.sleep(interval_s)

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", f"{url} loaded", timeout_s=30)

    def _node(self, selector: str) -> int:
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        if not node:
            raise AssertionError(f"no element matches {selector}")
        return node

    def choose_files(self, selector: str, *paths: Path) -> None:
        """What a user picking files in a file input does (the input's change event included)."""
        self.send("DOM.setFileInputFiles", nodeId=self._node(selector), files=[str(p) for p in paths])

    def type_into(self, selector: str, text: str) -> None:
        self.send("DOM.focus", nodeId=self._node(selector))
        self.send("Input.insertText", text=text)

    def click(self, selector: str) -> None:
        """A real mouse click at the middle of the element."""
        quad = self.send("DOM.getBoxModel", nodeId=self._node(selector))["model"]["content"]
        x, y = sum(quad[0::2]) / 4, sum(quad[1::2]) / 4
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        if getattr(self, "_socket", None) is not None:
            self._socket.close()
        stop(self.process)
        self._log.close()
