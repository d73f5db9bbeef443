"""Bucketed sliding windows: O(1) work per outcome (amortised), memory bounded by buckets.

A window is a ring of ``n`` buckets, newest first. Adding an outcome to bucket ``index``:

* ``index == head``: the newest bucket grows;
* ``index > head``: the ring rotates by ``index - head`` buckets (the ones that fall off
  are subtracted from the totals) and a new newest bucket starts;
* ``index < head`` (a late outcome): it lands in its own bucket if that bucket is still in
  the ring, and is dropped otherwise.

The window therefore covers bucket indexes ``head - n + 1 .. head``. The totals are kept
alongside the buckets, so reading them is O(1) too.
"""

from __future__ import annotations

from .records import Window

__all__ = ["add", "totals_at"]

_EMPTY_BUCKET = (0, 0, 0)


def add(window: Window, n: int, index: int, failed: int, slow: int) -> Window:
    """Return ``window`` with one call (``failed`` and ``slow`` are 0 or 1) in bucket ``index``."""
    buckets = window.buckets
    if not buckets:
        return Window(index, ((1, failed, slow),), 1, failed, slow)
    head = window.head
    if index == head:
        calls, failures, slows = buckets[0]
        return Window(
            head,
            ((calls + 1, failures + failed, slows + slow), *buckets[1:]),
            window.calls + 1,
            window.failures + failed,
            window.slow + slow,
        )
    if index > head:
        shift = index - head
        if shift >= n:
            return Window(index, ((1, failed, slow),), 1, failed, slow)
        kept = buckets[: n - shift]
        calls, failures, slows = window.calls, window.failures, window.slow
        for dropped_calls, dropped_failures, dropped_slow in buckets[n - shift :]:
            calls -= dropped_calls
            failures -= dropped_failures
            slows -= dropped_slow
        gap = (_EMPTY_BUCKET,) * (shift - 1)
        return Window(
            index,
            ((1, failed, slow), *gap, *kept),
            calls + 1,
            failures + failed,
            slows + slow,
        )
    age = head - index
    if age >= n:
        return window
    padded = buckets + (_EMPTY_BUCKET,) * (age + 1 - len(buckets))
    calls, failures, slows = padded[age]
    return Window(
        head,
        (*padded[:age], (calls + 1, failures + failed, slows + slow), *padded[age + 1 :]),
        window.calls + 1,
        window.failures + failed,
        window.slow + slow,
    )


def totals_at(window: Window, n: int, index: int) -> tuple[int, int, int]:
    """The ``(calls, failures, slow)`` the window would hold once its head reaches ``index``."""
    if index <= window.head:
        return window.calls, window.failures, window.slow
    shift = index - window.head
    if shift >= n:
        return 0, 0, 0
    calls, failures, slows = window.calls, window.failures, window.slow
    for dropped_calls, dropped_failures, dropped_slow in window.buckets[n - shift :]:
        calls -= dropped_calls
        failures -= dropped_failures
        slows -= dropped_slow
    return calls, failures, slows
