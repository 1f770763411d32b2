"""Group commit: many threads submit, one of them commits everything queued in one go.

A caller of :meth:`GroupCommit.submit` blocks until its item is committed (or failed) and
gets its own result. There is no timer and no background thread: the first caller to find
no commit in progress becomes the *leader*, takes everything queued (at most ``max_batch``)
and commits it while later callers queue up behind it; when it is done the next waiting
caller whose item is still queued leads the next batch. Under no contention a batch is one
item and costs what a single commit costs; under contention a batch holds every request that
arrived during the previous commit, so the number of commits (fsyncs) per second stays
bounded by the disk while the number of entries per commit grows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")


class _Request(Generic[T, R]):
    __slots__ = ("done", "item", "outcome")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.outcome: R | BaseException | None = None


class GroupCommit(Generic[T, R]):
    """Commits queued items with ``commit(items) -> outcomes`` (one per item, in order: a
    result, or the exception that item's caller raises). An exception raised by ``commit``
    itself fails every item of the batch."""

    def __init__(
        self,
        commit: Callable[[Sequence[T]], Sequence[R | BaseException]],
        *,
        max_batch: int = 256,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._commit = commit
        self._max = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Request[T, R]] = []
        self._leading = False
        self.commits = 0
        """Number of commits so far (for tests and metrics)."""

    def submit(self, item: T) -> R:
        request: _Request[T, R] = _Request(item)
        with self._cond:
            self._queue.append(request)
            while not request.done:
                if self._leading:
                    self._cond.wait()
                    continue
                self._leading = True
                batch = self._queue[: self._max]
                del self._queue[: self._max]
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._leading = False
                    self._cond.notify_all()
        outcome = request.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return cast(R, outcome)

    def _run(self, batch: list[_Request[T, R]]) -> None:
        try:
            outcomes = list(self._commit([r.item for r in batch]))
            if len(outcomes) != len(batch):
                raise RuntimeError("group commit: one outcome per item expected")
        except BaseException as e:  # every caller of the batch learns why
            outcomes = [e] * len(batch)
        self.commits += 1
        for request, outcome in zip(batch, outcomes, strict=True):
            request.outcome = outcome
            request.done = True
