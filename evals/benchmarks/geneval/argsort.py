"""The order in which the official GenEval scorer's ``np.argsort`` lists detections, ties included.

The official scorer orders each class's detections by ``np.argsort(scores)[::-1]`` under numpy 1.23 (its
environment's pin), where the default ``argsort`` of a float32 array is numpy's introsort
(``aquicksort`` in ``npysort/quicksort.cpp``): median-of-3 quicksort down to partitions of at most 16
elements, which insertion sort finishes, with a heapsort fallback past a depth of 2 floor(log2 n).
Equal scores therefore come out in an order that depends on the algorithm:

* with at most 16 candidates, insertion sort alone runs: it is stable, so ties come out in input order,
  and reversed, the one listed *last* first;
* above 16, partitioning moves equal scores around, so no simple rule gives the order.

numpy 2 sorts float32 with SIMD code (x86-simd-sort, Highway) whose tie order differs again, so neither
``np.argsort`` nor ``kind="stable"`` reproduces the official order here. This module ports numpy 1.23's
introsort for argsort step by step; it was checked against numpy 1.23.5 on 20,000 random arrays of up to
300 elements with many ties, and on inputs built (McIlroy's adversary) to reach the heapsort fallback,
with and without ties: the same permutation every time. Scores of a few dozen detections make the
pure-Python cost negligible.
"""

from __future__ import annotations

from collections.abc import Sequence

# npysort's SMALL_QUICKSORT: partitions of at most this many elements plus one are insertion-sorted.
SMALL_QUICKSORT = 15


def _less(a: float, b: float) -> bool:
    """numpy's FLOAT_LT: ``a < b``, with NaN sorted after every number."""
    return a < b or (b != b and a == a)


def _heapsort_indices(values: Sequence[float], order: list[int], low: int, count: int) -> None:
    """numpy's ``aheapsort`` of ``order[low:low + count]`` by ``values`` (1-based heap indexing, as there)."""

    def get(k: int) -> int:
        return order[low + k - 1]

    def put(k: int, index: int) -> None:
        order[low + k - 1] = index

    def sift_down(moving: int, i: int, size: int) -> None:
        # Move the hole at heap position i down to where ``moving`` belongs (numpy's inner loop).
        j = i << 1
        while j <= size:
            if j < size and _less(values[get(j)], values[get(j + 1)]):
                j += 1
            if _less(values[moving], values[get(j)]):
                put(i, get(j))
                i, j = j, j + j
            else:
                break
        put(i, moving)

    node = count >> 1
    while node > 0:  # build the heap
        sift_down(get(node), node, count)
        node -= 1
    while count > 1:  # take the largest out, one by one
        moving = get(count)
        put(count, get(1))
        count -= 1
        sift_down(moving, 1, count)


def numpy123_argsort(values: Sequence[float]) -> list[int]:
    """The permutation numpy 1.23's ``np.argsort(values)`` (default kind) returns, ties included.

    Args:
        values: the scores, as the float32 values numpy compared (convert with ``np.float32`` first:
            two float64 scores that differ may be equal in float32).
    """
    count = len(values)
    order = list(range(count))
    if count <= 1:
        return order
    low, high = 0, count - 1
    stack: list[tuple[int, int, int]] = []
    depth_left = (count.bit_length() - 1) * 2  # 2 x npy_get_msb(count)
    while True:
        if depth_left < 0:
            _heapsort_indices(values, order, low, high - low + 1)
        else:
            while high - low > SMALL_QUICKSORT:
                middle = low + ((high - low) >> 1)
                if _less(values[order[middle]], values[order[low]]):
                    order[middle], order[low] = order[low], order[middle]
                if _less(values[order[high]], values[order[middle]]):
                    order[high], order[middle] = order[middle], order[high]
                if _less(values[order[middle]], values[order[low]]):
                    order[middle], order[low] = order[low], order[middle]
                pivot = values[order[middle]]
                i, j = low, high - 1
                order[middle], order[j] = order[j], order[middle]
                while True:
                    i += 1
                    while _less(values[order[i]], pivot):
                        i += 1
                    j -= 1
                    while _less(pivot, values[order[j]]):
                        j -= 1
                    if i >= j:
                        break
                    order[i], order[j] = order[j], order[i]
                order[i], order[high - 1] = order[high - 1], order[i]
                depth_left -= 1
                # The larger partition waits on the stack; the loop goes on with the smaller one.
                if i - low < high - i:
                    stack.append((i + 1, high, depth_left))
                    high = i - 1
                else:
                    stack.append((low, i - 1, depth_left))
                    low = i + 1
            for i in range(low + 1, high + 1):  # insertion sort: stable
                moving = order[i]
                j = i
                while j > low and _less(values[moving], values[order[j - 1]]):
                    order[j] = order[j - 1]
                    j -= 1
                order[j] = moving
        if not stack:
            return order
        low, high, depth_left = stack.pop()
