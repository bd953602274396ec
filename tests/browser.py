"""What the browser tests share: a free port, waiting for a server to answer, and waiting for a
Streamlit script run to settle."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
BOOT_TIMEOUT = 120
RUN_TIMEOUT_MS = 240_000  # a page's first run reads the run, builds a film, loads the encoder
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, path: str = "/_stcore/health") -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the app did not answer on {url} within {BOOT_TIMEOUT}s")


def settle(page) -> None:
    """Wait until the script run is over: the app is drawn and the running indicator gone."""
    page.wait_for_timeout(500)  # a click's rerun may not have started yet
    page.wait_for_selector('[data-testid="stMain"]', timeout=RUN_TIMEOUT_MS)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]')"
        "?.getAttribute('data-test-script-state') === 'notRunning'",
        timeout=RUN_TIMEOUT_MS,
    )
    page.wait_for_timeout(1500)  # charts and images finish drawing


def no_exception(page) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()


@contextmanager
def serving(command: list[str], health: str, log: Path, env: dict[str, str]) -> Iterator[str]:
    """Start a server (``command`` gets ``--port``) and yield its URL; stopped with its group."""
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [*command, "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, server, health)
            yield url
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
