"""parallel.each: concurrent calls, results and failures in input order (no Spark)."""
import threading
import time

import pytest

from seglib import parallel


def test_results_keep_the_input_order_while_calls_overlap():
    running, peak, lock = [0], [0], threading.Lock()

    def slow(x):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2 if x == 1 else 0.05)  # the first finishes last
        with lock:
            running[0] -= 1
        return x * 10

    assert parallel.each(slow, [1, 2, 3, 4, 5]) == [10, 20, 30, 40, 50]
    assert peak[0] == parallel.MAX_THREADS


def test_the_first_failure_by_position_is_raised():
    def fail(x):
        if x == "late":
            time.sleep(0.2)
            raise ValueError("first in order")
        raise KeyError("finished first")

    with pytest.raises(ValueError, match="first in order"):
        parallel.each(fail, ["late", "early"])


def test_fewer_than_two_items_run_inline():
    assert parallel.each(lambda x: threading.current_thread() is threading.main_thread(), [1]) == [True]
    assert parallel.each(str, []) == []


def test_meanwhile_runs_on_the_calling_thread_while_the_items_run():
    started, seen = threading.Event(), []

    def item(x):
        started.set()
        time.sleep(0.2)
        return x

    def meanwhile():
        seen.append((threading.current_thread() is threading.main_thread(), started.wait(1)))

    assert parallel.each(item, [1], meanwhile=meanwhile) == [1]
    assert seen == [(True, True)]  # on this thread, and while an item was running


def test_an_item_failure_is_raised_before_a_failure_of_meanwhile():
    def item(x):
        raise KeyError("item")

    def meanwhile():
        raise ValueError("meanwhile")

    with pytest.raises(KeyError, match="item"):
        parallel.each(item, [1, 2], meanwhile=meanwhile)
    with pytest.raises(ValueError, match="meanwhile"):
        parallel.each(str, [1, 2], meanwhile=meanwhile)
