"""A ``fastdpr serve`` child process for the serve benchmarks (load levels, soak, reload): its URL, CPU
time, memory and batch counters."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

RUN_FASTDPR = "import sys; from fastdpr.cli.main import main; sys.exit(main())"


class Server:
    """A ``fastdpr serve`` child process; its URL and PID."""

    def __init__(self, index: Path, threads: int, extra: list[str]) -> None:
        own_threads = [] if "--threads" in extra else ["--threads", str(threads)]
        command = [sys.executable, "-c", RUN_FASTDPR, "serve", str(index), "--port", "0", *own_threads,
                   "--max-queue", "1024", *extra]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url = ""
        found = threading.Event()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                match = re.search(r"listening on (http://\S+)", line)
                if match:
                    self.url = match.group(1)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(300):
            self.process.kill()
            raise RuntimeError("the server did not start")
        import httpx

        for _ in range(3000):
            try:
                if httpx.get(self.url + "/ready", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server never became ready")

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the server process has used."""
        import psutil

        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def rss_mib(self) -> float:
        import psutil

        return round(psutil.Process(self.process.pid).memory_info().rss / 2**20, 1)

    def batch_stats(self) -> tuple[float, float]:
        """(batches, questions) so far, from /metrics."""
        import httpx

        text = httpx.get(self.url + "/metrics").text

        def value(name: str) -> float:
            found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
            return float(found.group(1)) if found else 0.0

        return value("fastdpr_batch_questions_count"), value("fastdpr_batch_questions_sum")

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(60)
