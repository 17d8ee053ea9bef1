"""`Coalescer`: continuous batching behind `@serve.batch` (pure asyncio, no Ray)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ttp_ray.serving.batching import Coalescer


class SlowModel:
    """Records each pass; the first pass blocks until released so a backlog can build up behind it."""

    def __init__(self) -> None:
        self.passes: list[list[int]] = []
        self.release = threading.Event()

    def __call__(self, items: list[int]) -> list[int | Exception]:
        self.passes.append(list(items))
        if len(self.passes) == 1:
            assert self.release.wait(10)
        return [ValueError(f"bad {x}") if x < 0 else x * 10 for x in items]


async def _until(cond, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout
        await asyncio.sleep(0.005)


def test_backlog_merges_into_one_pass_and_results_go_to_their_callers() -> None:
    async def main() -> None:
        model = SlowModel()
        c = Coalescer(model, max_items=100)
        first = asyncio.create_task(c.submit([1]))
        await _until(lambda: len(model.passes) == 1)  # the model is busy with [1]
        waiting = [asyncio.create_task(c.submit([i, i + 1])) for i in (2, 4, 6)]
        await asyncio.sleep(0.05)
        model.release.set()
        assert await first == [10]
        assert [await w for w in waiting] == [[20, 30], [40, 50], [60, 70]]
        assert model.passes == [[1], [2, 3, 4, 5, 6, 7]]  # three groups, one pass
        assert (c.passes, c.items) == (2, 7)

    asyncio.run(main())


def test_max_items_splits_passes_and_per_item_errors_stay_per_item() -> None:
    async def main() -> None:
        model = SlowModel()
        c = Coalescer(model, max_items=3)
        first = asyncio.create_task(c.submit([0]))
        await _until(lambda: len(model.passes) == 1)
        groups = [[1, 2], [-3], [4, 5], [6, 7, 8, 9]]  # the last group is larger than max_items: runs alone
        waiting = [asyncio.create_task(c.submit(g)) for g in groups]
        await asyncio.sleep(0.05)
        model.release.set()
        await first
        out = [await w for w in waiting]
        assert out[0] == [10, 20] and isinstance(out[1][0], ValueError) and out[2] == [40, 50]
        assert model.passes[1:] == [[1, 2, -3], [4, 5], [6, 7, 8, 9]]

    asyncio.run(main())


def test_failed_pass_fails_only_its_callers_and_cancelled_callers_are_skipped() -> None:
    calls: list[list[str]] = []
    gate = threading.Event()

    def run(items: list[str]) -> list[str]:
        calls.append(items)
        if items == ["block"]:
            assert gate.wait(10)
        if "boom" in items:
            raise RuntimeError("model crashed")
        if "short" in items:
            return []
        return [x.upper() for x in items]

    async def main() -> None:
        c = Coalescer(run, max_items=1)
        blocker = asyncio.create_task(c.submit(["block"]))
        await _until(lambda: len(calls) == 1)
        boom = asyncio.create_task(c.submit(["boom"]))
        gone = asyncio.create_task(c.submit(["gone"]))
        short = asyncio.create_task(c.submit(["short"]))
        ok = asyncio.create_task(c.submit(["ok"]))
        await asyncio.sleep(0.02)
        gone.cancel()
        gate.set()
        assert await blocker == ["BLOCK"]
        with pytest.raises(RuntimeError, match="model crashed"):
            await boom
        with pytest.raises(RuntimeError, match="returned 0 results for 1 items"):
            await short
        assert await ok == ["OK"]
        assert ["gone"] not in calls

    asyncio.run(main())
