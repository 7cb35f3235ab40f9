"""A background thread that reads the reader's chunk stream ahead of the consumer.

The numpy copies out of the memmap (page faults, disk reads, bf16 -> fp32) release the GIL, so
reading overlaps with training. The queue is bounded (``depth`` items, each one chunk), so the
read-ahead costs at most ``(depth + 1) * chunk_tokens * d_model * 4`` bytes whatever the store size.
An exception in the thread is re-raised in the consumer at the point it would have received the
failed chunk; ``close()`` stops the thread promptly even when the consumer stopped early.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_POLL_S = 0.05


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Prefetcher:
    """Runs ``produce`` (an iterator factory) in a daemon thread; ``get()`` returns its items in order.

    The iterator ends with a final ``None`` item from :meth:`get` (end of the stream)."""

    def __init__(self, produce: Callable[[], Iterator[Any]], *, depth: int = 2, name: str = "fastsae-reader"):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(produce,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, produce: Callable[[], Iterator[Any]]) -> None:
        it = None
        try:
            it = produce()
            for item in it:
                if not self._put(item):
                    return
            self._put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, who re-raises it
            self._put(_Failure(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # a generator's finally blocks run in this thread

    def get(self) -> Any:
        """The next item; None at the end of the stream; re-raises the thread's exception."""
        if self._done:
            return None
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("reader thread exited without a result") from None
        if item is None or isinstance(item, _Failure):
            self._done = True
            self.close()
            if isinstance(item, _Failure):
                raise item.exc
        return item

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread (it finishes the chunk it is reading) and drop what it read ahead."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
