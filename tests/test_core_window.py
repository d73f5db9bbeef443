"""The bucketed window: rotation, gaps, late outcomes, and reading totals ahead of time."""

from __future__ import annotations

from breaker_machines._core import EMPTY_WINDOW, Window, totals_at
from breaker_machines._core.window import add

N = 3  # buckets in every window below


def _fill(*items: tuple[int, int, int]) -> Window:
    """Add ``(index, failed, slow)`` items to an empty 3-bucket window, in order."""
    window = EMPTY_WINDOW
    for index, failed, slow in items:
        window = add(window, N, index, failed, slow)
    return window


def test_first_outcome_starts_the_window_at_its_index() -> None:
    assert add(EMPTY_WINDOW, N, 7, 1, 0) == Window(7, ((1, 1, 0),), 1, 1, 0)
    assert add(EMPTY_WINDOW, N, -4, 0, 1) == Window(-4, ((1, 0, 1),), 1, 0, 1)


def test_same_bucket_accumulates() -> None:
    window = _fill((5, 1, 0), (5, 0, 1), (5, 1, 1))
    assert window == Window(5, ((3, 2, 2),), 3, 2, 2)


def test_next_bucket_pushes_the_ring() -> None:
    window = _fill((5, 1, 0), (6, 0, 0), (7, 1, 1))
    assert window == Window(7, ((1, 1, 1), (1, 0, 0), (1, 1, 0)), 3, 2, 1)
    # A fourth bucket drops the oldest (index 5) and its counts.
    window = add(window, N, 8, 0, 0)
    assert window == Window(8, ((1, 0, 0), (1, 1, 1), (1, 0, 0)), 3, 1, 1)


def test_skipping_buckets_leaves_empty_ones_between() -> None:
    window = _fill((5, 1, 0), (7, 1, 0))
    assert window == Window(7, ((1, 1, 0), (0, 0, 0), (1, 1, 0)), 2, 2, 0)
    window = add(window, N, 9, 0, 1)  # index 7 survives, index 5 falls out
    assert window == Window(9, ((1, 0, 1), (0, 0, 0), (1, 1, 0)), 2, 1, 1)


def test_a_jump_of_a_whole_window_starts_over() -> None:
    window = _fill((5, 1, 1), (6, 1, 1))
    assert add(window, N, 9, 0, 0) == Window(9, ((1, 0, 0),), 1, 0, 0)
    assert add(window, N, 1000, 1, 0) == Window(1000, ((1, 1, 0),), 1, 1, 0)


def test_late_outcome_lands_in_its_own_bucket() -> None:
    window = _fill((5, 0, 0), (6, 0, 0), (7, 0, 0))
    late = add(window, N, 5, 1, 1)
    assert late == Window(7, ((1, 0, 0), (1, 0, 0), (2, 1, 1)), 4, 1, 1)
    # The head does not move back, so later outcomes are unaffected.
    assert add(late, N, 8, 0, 0).buckets == ((1, 0, 0), (1, 0, 0), (1, 0, 0))


def test_late_outcome_into_a_bucket_not_yet_materialised() -> None:
    window = _fill((7, 1, 0))  # only the head bucket exists
    late = add(window, N, 5, 1, 0)
    assert late == Window(7, ((1, 1, 0), (0, 0, 0), (1, 1, 0)), 2, 2, 0)
    middle = add(late, N, 6, 0, 1)
    assert middle == Window(7, ((1, 1, 0), (1, 0, 1), (1, 1, 0)), 3, 2, 1)


def test_outcome_older_than_the_window_is_dropped() -> None:
    window = _fill((5, 0, 0), (7, 0, 0))
    assert add(window, N, 4, 1, 1) is window
    assert add(window, N, -100, 1, 1) is window


def test_totals_at_the_head_or_before_are_the_totals() -> None:
    window = _fill((5, 1, 0), (6, 0, 1), (7, 1, 1))
    assert totals_at(window, N, 7) == (3, 2, 2)
    assert totals_at(window, N, 2) == (3, 2, 2)
    assert totals_at(EMPTY_WINDOW, N, 0) == (0, 0, 0)


def test_totals_at_subtract_each_expired_bucket() -> None:
    window = _fill((5, 1, 1), (6, 1, 1), (6, 1, 0), (7, 1, 1))
    assert totals_at(window, N, 8) == (3, 3, 2)  # bucket 5 (1, 1, 1) expired
    assert totals_at(window, N, 9) == (1, 1, 1)


def test_totals_at_a_later_index_forget_expired_buckets() -> None:
    window = _fill((5, 1, 0), (6, 0, 1), (7, 1, 1))
    assert totals_at(window, N, 8) == (2, 1, 2)  # bucket 5 expired
    assert totals_at(window, N, 9) == (1, 1, 1)  # only bucket 7 left
    assert totals_at(window, N, 10) == (0, 0, 0)
    assert totals_at(window, N, 10**9) == (0, 0, 0)
    # It agrees with what adding an empty-handed outcome there would leave.
    for index in (8, 9):
        moved = add(window, N, index, 0, 0)
        assert totals_at(window, N, index) == (moved.calls - 1, moved.failures, moved.slow)


def test_totals_at_with_a_short_ring() -> None:
    window = _fill((5, 1, 0))  # one bucket materialised of three
    assert totals_at(window, N, 6) == (1, 1, 0)
    assert totals_at(window, N, 7) == (1, 1, 0)
    assert totals_at(window, N, 8) == (0, 0, 0)
