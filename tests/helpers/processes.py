"""Stopping a test's child process: SIGTERM, a grace period for a clean exit, then SIGKILL."""

from __future__ import annotations

import subprocess


def stop(process: subprocess.Popen, grace_s: float = 15) -> None:
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
