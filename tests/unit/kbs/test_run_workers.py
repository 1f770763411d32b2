"""The worker supervisor (custodes.kbs.server.run_workers), with real forked processes."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from custodes.kbs.server import WORKER_NOT_STARTED, run_workers


def test_no_worker_started() -> None:
    outcome = run_workers(3, lambda _report: WORKER_NOT_STARTED)
    assert not outcome.started
    assert outcome.failed is not None and "exited with status 3" in outcome.failed


def test_a_worker_that_served_counts_even_if_it_was_killed() -> None:
    def worker(report_started: Callable[[], None]) -> int:
        report_started()
        os.kill(os.getpid(), signal.SIGKILL)  # served, then died (the OOM killer, say)
        return 0

    outcome = run_workers(2, worker)
    assert outcome.started  # what the start created must not be removed
    assert outcome.failed is not None and "killed by signal 9" in outcome.failed


def test_a_worker_that_ends_on_its_own_stops_the_others(tmp_path: Path) -> None:
    marks = tmp_path

    def worker(report_started: Callable[[], None]) -> int:
        report_started()
        try:
            # Exactly one worker claims the mark (O_EXCL: no race between the workers).
            os.close(os.open(marks / "first", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            time.sleep(60)  # the others serve until stopped
            return 0
        return 7  # the first one fails

    started = time.monotonic()
    outcome = run_workers(3, worker)
    assert outcome.started
    assert outcome.failed is not None and "exited with status 7" in outcome.failed
    assert time.monotonic() - started < 30  # the others were stopped, not waited for


def test_sigterm_to_the_supervisor_stops_every_worker(tmp_path: Path) -> None:
    def worker(report_started: Callable[[], None]) -> int:
        report_started()
        (tmp_path / str(os.getpid())).write_text("up")
        signal.pause()  # SIGTERM (default action) ends it
        return 0

    def stop_soon() -> None:
        deadline = time.monotonic() + 20
        while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=stop_soon, daemon=True).start()
    outcome = run_workers(2, worker)
    assert outcome.failed is None  # asked to stop: not a failure
    assert outcome.started
    assert signal.getsignal(signal.SIGTERM) == previous  # handlers restored
    for pid in (int(p.name) for p in tmp_path.iterdir()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_at_least_one_worker() -> None:
    with pytest.raises(ValueError):
        run_workers(0, lambda _report: 0)
