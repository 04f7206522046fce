"""Group commit: samples wait a few milliseconds to share one transaction, then are acknowledged."""

from __future__ import annotations

import asyncio
import logging
import time

from tortoise.exceptions import IntegrityError

from models.telemetry import Sample, store_batch

log = logging.getLogger(__name__)


class TelemetryWriter:
    """Batches samples; `write()` returns once the sample is committed (or raises)."""

    def __init__(self, batch_max: int = 1000, batch_delay: float = 0.002) -> None:
        self.batch_max = batch_max
        self.batch_delay = batch_delay
        self._queue: asyncio.Queue[tuple[Sample, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.committed = 0
        self.batches = 0
        self.commit_seconds = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gatehouse.telemetry-writer")

    async def stop(self) -> None:
        """Flush what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    def submit(self, sample: Sample) -> asyncio.Future[None]:
        """Queue a sample; the future is done once its batch is committed (or fails with why not).
        A plain future, no task: tens of thousands of samples may be waiting at once."""
        if self._task is None:
            raise RuntimeError("telemetry writer is not running")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((sample, fut))
        return fut

    async def write(self, sample: Sample) -> None:
        """Queue a sample and return once its batch is committed (or raise why it was not)."""
        await self.submit(sample)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def stats(self) -> dict[str, float]:
        return {
            "telemetry_pending": self.pending,
            "telemetry_committed": self.committed,
            "telemetry_batches": self.batches,
            "telemetry_mean_batch": round(self.committed / self.batches, 1) if self.batches else 0,
            "telemetry_mean_commit_ms": round(1000 * self.commit_seconds / self.batches, 2) if self.batches else 0,
        }

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self.batch_delay and self._queue.qsize() < self.batch_max:
                # Let concurrent publishers join this batch.
                await asyncio.sleep(self.batch_delay)
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[Sample, asyncio.Future[None]]]) -> None:
        started = time.perf_counter()
        try:
            await store_batch([sample for sample, _ in batch])
        except Exception as exc:
            if not isinstance(exc, IntegrityError):  # store_batch raises SampleRefused, one
                # Storage itself failed (locked past busy_timeout, disk full): fail the batch at
                # once; nothing of it was acknowledged, and devices send it again.
                log.error("telemetry batch of %d not stored: %s", len(batch), exc)
                for _, fut in batch:
                    _settle(fut, exc)
                return
            # One bad sample (its device was deleted meanwhile) must not sink the others: retry
            # them one by one and fail only those that fail alone.
            log.warning("telemetry batch of %d failed; retrying one by one", len(batch), exc_info=True)
            for sample, fut in batch:
                try:
                    await store_batch([sample])
                except Exception as exc:
                    log.warning("telemetry sample for device %s not stored: %s", sample.device_id, exc)
                    _settle(fut, exc)
                else:
                    self.committed += 1
                    _settle(fut, None)
        else:
            self.committed += len(batch)
            self.batches += 1
            for _, fut in batch:
                _settle(fut, None)
        finally:
            self.commit_seconds += time.perf_counter() - started
            for _ in batch:
                self._queue.task_done()


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)
        fut.exception()  # mark retrieved: the sender may be gone; the failure is already logged
