"""What the headless-Chromium tests share: where the browser toolchain is,
the check that it is installed (fail, never skip), and stopping a driver
process this suite started, with its Chromium."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BROWSER_DIR = REPO_ROOT / "tests" / "browser"
CHROMIUM = Path(os.environ.get("SWITCHYARD_CHROMIUM", "/usr/bin/chromium"))
STOP_GRACE_S = 10.0

_DRIVERS: list[subprocess.Popen] = []


def track_driver(proc: subprocess.Popen) -> None:
    """Stop `proc` (and its process group) when pytest exits, if a test
    that ended abnormally did not."""
    _DRIVERS.append(proc)


@atexit.register
def _kill_leftover_drivers() -> None:
    for proc in _DRIVERS:
        stop_driver(proc)


def stop_driver(proc: subprocess.Popen, close_stdin: bool = False) -> None:
    """Stop a driver this suite started: close its stdin first if asked
    (a line-protocol driver then closes Chromium and exits), SIGTERM after
    STOP_GRACE_S, then SIGKILL its process group (its own session: node and
    the Chromium it launched)."""
    if proc.poll() is None:
        if close_stdin:
            try:
                proc.stdin.close()
            except Exception:
                pass
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of our own group only
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=5)


def require_browser_tools(files: tuple[str, ...] = ()) -> str:
    """Node, Chromium and playwright-core (and `files` under
    tests/browser); fail (not skip) when any is missing. Returns node's
    path."""
    missing = []
    node = shutil.which("node")
    if node is None:
        missing.append("node (Debian package nodejs)")
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    for rel in ("node_modules/playwright-core/package.json", *files):
        if not (BROWSER_DIR / rel).is_file():
            missing.append(f"tests/browser/{rel}")
    if missing:
        pytest.fail(
            "browser test toolchain missing: "
            + ", ".join(missing)
            + "; install it with `bash tests/browser/setup.sh`",
            pytrace=False,
        )
    return node
