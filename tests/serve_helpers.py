"""Run a real ``fastdpr serve`` process on a free loopback port, for the HTTP and browser tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import requires

RUN_FASTDPR = "import sys; from fastdpr.cli.main import main; sys.exit(main())"


def require_module(name: str, extra: str) -> Any:
    """Import ``name``; skip without it locally, fail in CI (``CI=true`` installs every extra)."""
    return requires.require_module(name, f"pip install -e '.[{extra}]'")


def require_serve() -> None:
    """The serve extra (and httpx, the tests' client)."""
    for module in ("fastapi", "uvicorn", "prometheus_client"):
        require_module(module, "serve")
    require_module("httpx", "dev")


class ServerProcess:
    """``fastdpr serve INDEX --port 0 ARGS`` in a child process; ``url`` once it listens and is ready.

    ``env``: variables added to the server's environment (e.g. ``FASTDPR_API_KEY``); ``api_key``: the key
    the readiness check sends (a server with a key answers /ready only with it)."""

    def __init__(self, index: Path, *args: Any, ready_timeout: float = 120.0, env: dict[str, str] | None = None,
                 api_key: str | None = None) -> None:
        self.command = [sys.executable, "-c", RUN_FASTDPR, "serve", str(index), "--port", "0", *map(str, args)]
        self.env = {**os.environ, **(env or {})}
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.ready_timeout = ready_timeout
        self.lines: list[str] = []
        self.url = ""
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> ServerProcess:
        import httpx

        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=self.env)
        listening = threading.Event()

        def read() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line)
                found = re.search(r"listening on (http://\S+)", line)
                if found:
                    self.url = found.group(1)
                    listening.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + self.ready_timeout
        while not listening.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the server did not start:\n{self.output}")
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/ready", headers=self.headers, timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"the server never became ready:\n{self.output}")

    @property
    def output(self) -> str:
        """Everything the server printed so far."""
        return "".join(self.lines)

    def terminate(self) -> None:
        """Send SIGTERM (what a process manager sends to stop the service)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 60.0) -> int:
        """The exit status, once the process ended."""
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not end."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from a Prometheus text exposition (0 when the series is absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0
