"""The worker lanes: blocking work runs off the event loop, each tenant within its own quota,
and an exception crossing back to the loop carries no frames from the worker thread."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from custodes.errors import PolicyError
from custodes.kbs.lanes import Pools


def test_a_tenant_over_its_quota_waits_and_another_tenant_does_not() -> None:
    pools = Pools(tenant_quota=2)
    release = threading.Event()
    finished: dict[str, float] = {}

    def slow() -> None:
        release.wait(10)

    async def main() -> None:
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(3):  # one more than the quota
                tg.start_soon(pools.lanes("a").appraise, slow)
            await anyio.sleep(0.2)
            # Tenant b gets a thread at once, though tenant a has work queued.
            await pools.lanes("b").appraise(lambda: None)
            finished["b"] = time.monotonic() - started
            assert pools.quota("a").borrowed_tokens == 2
            assert pools.quota("b").borrowed_tokens == 0
            release.set()

    anyio.run(main)
    assert finished["b"] < 2


def test_the_loop_keeps_running_while_a_lane_works() -> None:
    ticks = 0

    async def main() -> None:
        nonlocal ticks

        async def tick() -> None:
            nonlocal ticks
            while True:
                await anyio.sleep(0.01)
                ticks += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            await Pools().lanes("a").store(lambda: time.sleep(0.3))
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert ticks >= 10


def test_an_error_leaves_its_thread_without_frames() -> None:
    def fail() -> None:
        marker = object()  # a local of the worker thread's frame
        raise PolicyError(f"refused {id(marker)}")

    async def main() -> None:
        with pytest.raises(PolicyError) as info:
            await Pools().lanes("a").policy(fail)
        tb = info.value.__traceback__
        frames = []
        while tb is not None:
            frames.append(tb.tb_frame.f_code.co_name)
            tb = tb.tb_next
        assert "fail" not in frames

    anyio.run(main)
