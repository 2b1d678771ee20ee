"""Micro-batching: queries that arrive together share one forward pass.

The first waiting query waits at most `max_wait_s` for others, up to `max_batch`; the batch then runs
in a worker thread (off the event loop) and each query gets its own top k. Exact search returns the
same ranking for top k as for the first k of a larger top k, so answers equal one-at-a-time ones.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any, Callable

import numpy as np

Neighbours = Callable[[np.ndarray, int], list[list[dict[str, Any]]]]


class QueueFull(Exception):
    """More queries are waiting than the server takes: answered 503."""


class MicroBatcher:
    def __init__(self, neighbours: Neighbours, executor: Executor, max_batch: int, max_wait_s: float, max_queue: int):
        self.neighbours = neighbours
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.queue: asyncio.Queue = asyncio.Queue()
        self.batches = 0  # forward passes so far (for /info and tests)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, image: np.ndarray, k: int) -> list[dict[str, Any]]:
        if self.queue.qsize() >= self.max_queue:
            raise QueueFull()
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((image, k, future))
        return await future

    async def _collect(self) -> list[tuple[np.ndarray, int, asyncio.Future]]:
        batch = [await self.queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return [item for item in batch if not item[2].done()]  # a request that timed out is gone

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            images = np.stack([image for image, _, _ in batch])
            k = max(k for _, k, _ in batch)
            try:
                answers = await loop.run_in_executor(self.executor, self.neighbours, images, k)
            except Exception as exc:  # handed to each waiting request (a 500 there, the server stays up)
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            for (_, wanted, future), hits in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(hits[:wanted])
