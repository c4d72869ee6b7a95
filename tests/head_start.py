"""Head starts: the session's two real-MiniLM exports run as background processes from the moment the
tests are collected, while the quick tests run in the foreground.

They are most of a CI run's fixed cost (minutes each: the alpha search of the default recipe quantizes
the model several times) and mostly single-threaded, so on a 2-core machine they overlap with the
quick tests instead of stopping them. They run one after the other (one extra busy process at a time,
not two), through the command line a user runs (``fastdpr export``, ``fastdpr demo``), and the tests
that need them are moved to the end of the run so that the wait, if any, comes last.

A fixture asks :func:`result` for its job: it waits for it (starting it then if collection did not)
and fails the tests that need it, with the job's own output, when the command failed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: Seconds a background job stopped at the session's end gets to exit after Ctrl-C before it is killed.
STOP_GRACE_S = 20.0


def default_sigint() -> None:
    """``preexec_fn`` for a child that is interrupted with SIGINT: a shell runs background jobs with
    SIGINT ignored, the child inherits that, and Python then never raises KeyboardInterrupt (seen when
    .ci/run was started with ``&``). Ctrl-C in a terminal always has the default disposition."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass(frozen=True)
class Job:
    """One background command: ``argv`` run in ``cwd`` with ``env`` (over a clean copy of os.environ)."""

    argv: tuple[str, ...]
    cwd: Path
    env: dict[str, str | None]
    output: Path  # where the command's files go, for the fixture to return


@dataclass
class Finished:
    """What a job left: its exit code and its merged stdout/stderr."""

    exit_code: int
    log: str


@dataclass
class Runner:
    """Runs the jobs of a session one after the other in a thread, each in its own process.

    Its directory (and so its jobs, from ``make_jobs``) is made when first needed, not at import: Ray
    workers and other processes import the test modules, and so conftest, without running a session."""

    make_jobs: Callable[[Path], dict[str, Job]]
    root: Path | None = None
    done: dict[str, threading.Event] = field(default_factory=dict)
    finished: dict[str, Finished] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    thread: threading.Thread | None = None
    stopping: bool = False
    _jobs: dict[str, Job] | None = None

    @property
    def jobs(self) -> dict[str, Job]:
        """The session's jobs by fixture name (their directory is created on first use)."""
        if self._jobs is None:
            self.root = Path(tempfile.mkdtemp(prefix="fastdpr-head-start-"))
            self._jobs = self.make_jobs(self.root)
        return self._jobs

    def start(self, names: list[str]) -> None:
        """Run the named jobs in the background, in this order (each job once per session)."""
        todo = [name for name in names if name not in self.done and name in self.jobs]
        for name in todo:
            self.done[name] = threading.Event()
        self.thread = threading.Thread(target=self._run_all, args=(todo,), name="head-start", daemon=True)
        self.thread.start()

    def result(self, name: str) -> Finished:
        """Wait for job ``name`` (run now if it was never started) and return what it left."""
        if name not in self.done:
            self.start([name])
        self.done[name].wait()
        return self.finished[name]

    def stop(self) -> None:
        """End of the session: stop a job still running (an interrupted or partial run) and clean up.

        Ctrl-C first, as a user stops an export: it removes its temporary directories (in /tmp, outside
        ``root``) on the way out, where a kill left them behind; killed only if it has not ended in
        :data:`STOP_GRACE_S`."""
        self.stopping = True
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.thread is not None:
            self.thread.join(timeout=30)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def _run_all(self, names: list[str]) -> None:
        for name in names:
            try:
                self.finished[name] = self._run(self.jobs[name], name)
            except Exception as exc:  # reported to the tests that need the job, not lost in a thread
                self.finished[name] = Finished(-1, f"could not run {name}: {exc!r}")
            finally:
                self.done[name].set()

    def _run(self, job: Job, name: str) -> Finished:
        if self.stopping:
            return Finished(-1, f"{name}: the session ended before it ran")
        env = dict(os.environ)
        for key, value in job.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        assert self.root is not None  # made with the jobs
        log_path = self.root / f"{name}.log"
        with open(log_path, "wb") as log:
            # stop() relies on Ctrl-C reaching the child.
            self.process = subprocess.Popen(job.argv, cwd=job.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, preexec_fn=default_sigint)
            exit_code = self.process.wait()
        return Finished(exit_code, log_path.read_text(encoding="utf-8", errors="replace"))


def fastdpr_command() -> list[str]:
    """The ``fastdpr`` console script of this environment (as a user runs it), or the same entry point."""
    script = Path(sys.executable).with_name("fastdpr")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from fastdpr.cli.main import main; main()"]


def needed(items: list[pytest.Item], names: set[str]) -> list[str]:
    """The head-start fixtures (of ``names``) that the selected tests use, in the order they first do."""
    order: list[str] = []
    for item in items:
        for name in getattr(item, "fixturenames", ()):
            if name in names and name not in order:
                order.append(name)
    return order


def last_the_tests_needing(items: list[pytest.Item], names: set[str]) -> None:
    """Move the tests that use any of ``names`` (directly or through other fixtures) to the end, in
    place, keeping the order within each group (so they wait for a head start as late as possible)."""
    items.sort(key=lambda item: bool(names & set(getattr(item, "fixturenames", ()))))
