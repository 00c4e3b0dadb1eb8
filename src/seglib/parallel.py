"""Independent small Spark actions side by side.

On a small table a Spark action is mostly latency: planning, a round trip to the Spark Connect server,
scheduling a job of a few tasks. Checking four Gold tables, or reading three Delta versions, one after
the other pays that latency four or three times. Sent from threads they overlap; a Spark session (classic
or Spark Connect) takes concurrent actions from several threads.

Not for Spark ML's readers and writers: over Spark Connect they look up the thread's active session,
which a pool thread does not have (an AssertionError). DataFrame reads, writes and SQL are bound to their
session and safe.

Results come back in the order of the inputs, and the first failure in that order is raised, so the
outcome does not depend on which thread finished first.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_THREADS = 4  # enough to overlap latency; more would only queue on a laptop's cores


def each(fn: Callable[[T], R], items: Iterable[T], meanwhile: Callable[[], object] | None = None) -> list[R]:
    """``[fn(x) for x in items]``, the calls running concurrently. *meanwhile*, if given, runs on the
    calling thread while they do (what must stay on it, such as a Spark ML writer); the items' first
    failure is raised before its own."""
    items = list(items)
    if len(items) < 2 and meanwhile is None:
        return [fn(x) for x in items]
    error = None
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_THREADS, len(items))), thread_name_prefix="seglib") as pool:
        futures = [pool.submit(fn, x) for x in items]
        if meanwhile is not None:
            try:
                meanwhile()
            except BaseException as e:  # noqa: BLE001 - raised once the items are done, unless one failed first
                error = e
    results = [f.result() for f in futures]  # in order: the first failure by position is the one raised
    if error is not None:
        raise error
    return results
