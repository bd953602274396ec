"""`douban app` stopped with SIGTERM (a service manager, `kill`) stops its Streamlit server too:
the port is free again, nothing keeps listening (issue 21, operations)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from browser import free_port, wait_healthy

pytestmark = pytest.mark.slow


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sigterm_to_the_cli_stops_the_streamlit_child(demo_run) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "app", "--run", "demo",
         "--runs-dir", str(demo_run.runs_dir), "--port", str(port), "--headless"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
        os.kill(server.pid, signal.SIGTERM)  # the CLI process alone, not its group
        assert server.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while listening(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not listening(port), "streamlit still listens after its CLI was terminated"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
