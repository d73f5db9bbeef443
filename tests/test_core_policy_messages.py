"""Every refusal of Policy says the field, the value and why, word for word.

The messages are part of the interface (a ConfigError names the field and the value);
mutation testing showed the other tests only checked the field. Also the edges of each
limit, which the same mutants moved by one.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from breaker_machines._core import ConfigError, Policy

nan, inf = math.nan, math.inf

REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"consecutive_failures": 0}, "consecutive_failures=0: must be >= 1"),
    ({"consecutive_failures": "3"}, "consecutive_failures='3': must be an integer"),
    (
        {"consecutive_failures": 2147483648},
        "consecutive_failures=2147483648: must be <= 2,147,483,647",
    ),
    ({"consecutive_failures": True}, "consecutive_failures=True: must be an integer"),
    ({"failures": 3}, "within=None: failures and within must be given together"),
    ({"within": 10.0}, "failures=None: failures and within must be given together"),
    ({"failures": 3, "within": 0.0}, "within=0.0: must be > 0 seconds"),
    ({"failures": 3, "within": inf}, "within=inf: must be a finite number of seconds"),
    ({"failures": 3, "within": "1"}, "within='1': must be a number of seconds"),
    ({"failures": 3, "within": True}, "within=True: must be a number of seconds"),
    ({"failure_rate": 0.0}, "failure_rate=0.0: must be a rate in (0, 1]"),
    ({"failure_rate": 1.5}, "failure_rate=1.5: must be a rate in (0, 1]"),
    ({"failure_rate": "0.5"}, "failure_rate='0.5': must be a number"),
    ({"failure_rate": nan}, "failure_rate=nan: must be a rate in (0, 1]"),
    (
        {"slow_call_rate": 0.5},
        "slow_call_duration=None: slow_call_rate and slow_call_duration must be given together",
    ),
    (
        {"slow_call_duration": 1.0},
        "slow_call_rate=None: slow_call_rate and slow_call_duration must be given together",
    ),
    (
        {"failure_rate": 0.5, "window": 10.0, "window_calls": 10},
        "window_calls=10: give window or window_calls, not both",
    ),
    ({"failure_rate": 0.5, "minimum_calls": 0}, "minimum_calls=0: must be >= 1"),
    (
        {"failure_rate": 0.5, "window_calls": 10, "minimum_calls": 11},
        "minimum_calls=11: can never be reached: the window holds at most window_calls=10 calls",
    ),
    (
        {"failure_rate": 0.5, "window_calls": 101},
        "window_calls=101: has no divisor between 5 and 10 to split it into buckets (the window would empty all at once): pass buckets= (a divisor of window_calls) or choose a rounder window_calls",  # noqa: E501
    ),
    (
        {"failure_rate": 0.5, "window": 1e-09},
        "window=1e-09: is too small for 10 buckets: each must span at least a microsecond",
    ),
    (
        {"failures": 3, "within": 1e-09},
        "within=1e-09: is too small for 10 buckets: each must span at least a microsecond",
    ),
    ({"window": 10.0}, "window=10.0: needs failure_rate or slow_call_rate"),
    ({"window_calls": 10}, "window_calls=10: needs failure_rate or slow_call_rate"),
    (
        {"failure_rate": 0.5, "window_calls": 33},  # its largest divisor up to 10 is 3
        "window_calls=33: has no divisor between 5 and 10 to split it into buckets (the window would empty all at once): pass buckets= (a divisor of window_calls) or choose a rounder window_calls",  # noqa: E501
    ),
    (
        {"failure_rate": 0.5, "window_calls": 52},  # ... and 4 for this one
        "window_calls=52: has no divisor between 5 and 10 to split it into buckets (the window would empty all at once): pass buckets= (a divisor of window_calls) or choose a rounder window_calls",  # noqa: E501
    ),
    ({"reset_after": 0.0}, "reset_after=0.0: must be > 0 seconds"),
    ({"reset_after": -1.0}, "reset_after=-1.0: must be > 0 seconds"),
    ({"backoff": 0.5}, "backoff=0.5: must be a finite multiplier >= 1"),
    ({"backoff": "2"}, "backoff='2': must be a number"),
    ({"backoff": inf}, "backoff=inf: must be a finite multiplier >= 1"),
    (
        {"backoff": 2.0},
        "max_reset_after=None: is required when backoff > 1 (the open time must stay bounded)",
    ),
    (
        {"backoff": 2.0, "max_reset_after": 1.0, "reset_after": 30.0},
        "max_reset_after=1.0: must be >= reset_after=30.0",
    ),
    ({"jitter": 1.0}, "jitter=1.0: must be a fraction in [0, 1)"),
    ({"jitter": "0.1"}, "jitter='0.1': must be a number"),
    ({"jitter": -0.1}, "jitter=-0.1: must be a fraction in [0, 1)"),
    ({"half_open_probes": 0}, "half_open_probes=0: must be >= 1"),
    ({"success_threshold": 0}, "success_threshold=0: must be >= 1"),
    ({"probe_lease": 0.0}, "probe_lease=0.0: must be > 0 seconds"),
    ({"buckets": 0}, "buckets=0: must be >= 1"),
    ({"failure_rate": 0.5, "window": 10.0, "buckets": 1001}, "buckets=1001: must be <= 1000"),
    (
        {"reset_after": 1.5e308, "jitter": 0.5},
        "reset_after=1.5e+308: is too large: with jitter=0.5 it overflows",
    ),
    (
        {"backoff": 2.0, "max_reset_after": 1.5e308, "jitter": 0.5},
        "max_reset_after=1.5e+308: is too large: with jitter=0.5 it overflows",
    ),
]


@pytest.mark.parametrize(("options", "message"), REFUSALS, ids=[m for _, m in REFUSALS])
def test_the_refusal_says_field_value_and_why(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Policy(**options)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "options",
    [
        {"failures": 3, "within": 1e-5},  # buckets of a microsecond (and a little)
        {"failure_rate": 0.5, "window": 1e-5},
        {"failures": 3, "within": 1e-6, "buckets": 1},  # exactly a microsecond
        {"failure_rate": 0.5, "window": 1e-6, "buckets": 1},
        {"consecutive_failures": 2**31 - 1},  # the largest count
        {"failure_rate": 0.5, "window": 10.0, "buckets": 1000},  # the most buckets
        {"backoff": 2.0, "reset_after": 30.0, "max_reset_after": 30.0},
        {"reset_after": 1e308, "jitter": 0.5},  # large, and still finite with jitter
        {"success_threshold": 3, "half_open_probes": 2},
    ],
)
def test_the_edges_of_each_limit_are_accepted(options: dict[str, Any]) -> None:
    Policy(**options)


@pytest.mark.parametrize(("window_calls", "per_bucket"), [(10, 1), (12, 2), (1000, 100)])
def test_calls_per_bucket_is_a_whole_number(window_calls: int, per_bucket: int) -> None:
    policy = Policy(failure_rate=0.5, window_calls=window_calls)
    assert policy.rate_bucket_calls == per_bucket
    assert type(policy.rate_bucket_calls) is int


DURATIONS = [
    "within",
    "slow_call_duration",
    "window",
    "reset_after",
    "max_reset_after",
    "probe_lease",
]


@pytest.mark.parametrize("name", DURATIONS)
def test_an_int_duration_beyond_float_range_is_refused(name: str) -> None:
    # math.isfinite() raises OverflowError for such an int: it must become a ConfigError,
    # not escape, and not pass as finite.
    companions = {
        "within": {"failures": 3},
        "slow_call_duration": {"slow_call_rate": 0.5},
        "window": {"failure_rate": 0.5},
        "max_reset_after": {"backoff": 2.0},
    }
    huge = 10**400
    with pytest.raises(ConfigError) as caught:
        Policy(**companions.get(name, {}), **{name: huge})
    assert str(caught.value) == f"{name}={huge!r}: must be a finite number of seconds"


def test_window_calls_with_five_calls_a_bucket_are_accepted() -> None:
    # 25 has no divisor between 6 and 10 but 5 is enough: five buckets of five calls.
    policy = Policy(failure_rate=0.5, window_calls=25)
    assert (policy.bucket_count, policy.rate_bucket_calls) == (5, 5)


@pytest.mark.parametrize("trips", [1, 0, -3])
def test_the_first_trip_and_below_open_for_reset_after(trips: int) -> None:
    policy = Policy(reset_after=10.0, backoff=2.0, max_reset_after=100.0)
    assert policy.open_duration(trips, 0.5) == 10.0
    assert policy.open_duration(2, 0.5) == 20.0
