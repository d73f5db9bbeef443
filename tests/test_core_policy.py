"""Policy: validation (every error names its field), derived geometry, open duration."""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest

from breaker_machines._core import ConfigError, Policy

# --------------------------------------------------------------------------- validation

RATE = {"failure_rate": 0.5}

INVALID: list[tuple[str, dict[str, Any], str]] = [
    # (field blamed, kwargs, words the reason must contain)
    ("consecutive_failures", {"consecutive_failures": 0}, ">= 1"),
    ("consecutive_failures", {"consecutive_failures": -3}, ">= 1"),
    ("consecutive_failures", {"consecutive_failures": True}, "integer"),
    ("consecutive_failures", {"consecutive_failures": 2.0}, "integer"),
    ("consecutive_failures", {"consecutive_failures": "5"}, "integer"),
    ("within", {"failures": 3}, "together"),
    ("failures", {"within": 10.0}, "together"),
    ("failures", {"failures": 0, "within": 10.0}, ">= 1"),
    ("within", {"failures": 3, "within": 0}, "> 0 seconds"),
    ("within", {"failures": 3, "within": -1.0}, "> 0 seconds"),
    ("within", {"failures": 3, "within": math.nan}, "finite"),
    ("within", {"failures": 3, "within": math.inf}, "finite"),
    ("within", {"failures": 3, "within": "10"}, "number of seconds"),
    ("within", {"failures": 3, "within": False}, "number of seconds"),
    ("within", {"failures": 3, "within": 5e-324}, "too small for 10 buckets"),
    ("failure_rate", {"failure_rate": 0.0}, "(0, 1]"),
    ("failure_rate", {"failure_rate": 1.5}, "(0, 1]"),
    ("failure_rate", {"failure_rate": math.nan}, "(0, 1]"),
    ("failure_rate", {"failure_rate": True}, "must be a number"),
    ("failure_rate", {"failure_rate": "0.5"}, "must be a number"),
    ("slow_call_duration", {"slow_call_rate": 0.5}, "together"),
    ("slow_call_rate", {"slow_call_duration": 2.0}, "together"),
    ("slow_call_rate", {"slow_call_rate": -0.5, "slow_call_duration": 2.0}, "(0, 1]"),
    ("slow_call_duration", {"slow_call_rate": 0.5, "slow_call_duration": 0.0}, "> 0"),
    ("minimum_calls", {**RATE, "minimum_calls": 0}, ">= 1"),
    ("minimum_calls", {"minimum_calls": 1.5}, "integer"),
    ("window_calls", {**RATE, "window": 10.0, "window_calls": 100}, "not both"),
    ("window", {"window": 10.0}, "needs failure_rate or slow_call_rate"),
    ("window", {**RATE, "window": -10.0}, "> 0"),
    ("window", {**RATE, "window": 5e-324, "buckets": 2}, "too small for 2 buckets"),
    ("window_calls", {"window_calls": 100}, "needs failure_rate or slow_call_rate"),
    ("window_calls", {**RATE, "window_calls": 0}, ">= 1"),
    ("buckets", {"buckets": 0}, ">= 1"),
    ("buckets", {"buckets": 1001}, "<= 1000"),
    ("buckets", {**RATE, "window_calls": 100, "buckets": 7}, "divide window_calls=100"),
    ("buckets", {**RATE, "window_calls": 5, "buckets": 10}, "divide window_calls=5"),
    ("reset_after", {"reset_after": 0}, "> 0"),
    ("reset_after", {"reset_after": math.inf}, "finite"),
    ("backoff", {"backoff": "2"}, "must be a number"),
    ("backoff", {"backoff": True}, "must be a number"),
    ("backoff", {"backoff": 0.5}, "finite multiplier >= 1"),
    ("backoff", {"backoff": math.inf}, "finite multiplier >= 1"),
    ("backoff", {"backoff": math.nan}, "finite multiplier >= 1"),
    ("max_reset_after", {"backoff": 2.0}, "required when backoff > 1"),
    ("max_reset_after", {"max_reset_after": -1.0}, "> 0"),
    ("max_reset_after", {"reset_after": 30.0, "max_reset_after": 10.0}, ">= reset_after=30.0"),
    ("jitter", {"jitter": 1.0}, "[0, 1)"),
    ("jitter", {"jitter": -0.1}, "[0, 1)"),
    ("jitter", {"jitter": math.nan}, "[0, 1)"),
    ("jitter", {"jitter": None}, "must be a number"),
    ("half_open_probes", {"half_open_probes": 0}, ">= 1"),
    ("success_threshold", {"success_threshold": 0}, ">= 1"),
    ("probe_lease", {"probe_lease": 0.0}, "> 0"),
]


@pytest.mark.parametrize(
    ("field", "kwargs", "words"), INVALID, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(INVALID)]
)
def test_invalid_value_names_its_field(field: str, kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Policy(**kwargs)
    error = caught.value
    assert error.field == field
    assert error.value is kwargs.get(field)
    assert str(error).startswith(f"{field}={kwargs.get(field)!r}: ")
    assert words in error.reason
    assert isinstance(error, ValueError)


def test_config_error_pickles_with_its_fields() -> None:
    error = ConfigError("jitter", 1.5, "must be a fraction in [0, 1)")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ConfigError
    assert (copy.field, copy.value, copy.reason) == ("jitter", 1.5, error.reason)
    assert str(copy) == str(error) == "jitter=1.5: must be a fraction in [0, 1)"


def test_defaults_are_valid_and_trip_on_nothing() -> None:
    policy = Policy()
    assert policy.consecutive_failures is None
    assert policy.failures is None
    assert policy.counts_rates is False
    assert policy.bucket_count == 10
    assert policy.rate_bucket_calls == 0
    assert policy.within_width == 0.0
    assert policy.rate_width == 0.0


def test_policy_is_frozen_and_compares_by_configuration() -> None:
    policy = Policy(consecutive_failures=3)
    with pytest.raises(AttributeError):
        policy.consecutive_failures = 4  # type: ignore[misc]
    assert policy == Policy(consecutive_failures=3)
    assert policy != Policy(consecutive_failures=4)
    assert not hasattr(policy, "__dict__")


# --------------------------------------------------------------------------- derived geometry


@pytest.mark.parametrize(
    ("kwargs", "buckets", "per_bucket"),
    [
        ({"failure_rate": 0.5}, 10, 10),  # default: last 100 calls in 10 buckets
        ({"failure_rate": 0.5, "window_calls": 20}, 10, 2),
        ({"failure_rate": 0.5, "window_calls": 7, "minimum_calls": 5}, 7, 1),  # a prime < 10
        ({"failure_rate": 0.5, "window_calls": 13, "buckets": 13, "minimum_calls": 5}, 13, 1),
        ({"failure_rate": 0.5, "window_calls": 36}, 9, 4),  # largest divisor <= 10
        ({"failure_rate": 0.5, "window_calls": 36, "buckets": 4}, 4, 9),
        (
            {
                "slow_call_rate": 0.5,
                "slow_call_duration": 1.0,
                "window_calls": 5,
                "minimum_calls": 5,
            },
            5,
            1,
        ),
    ],
)
def test_count_window_geometry(kwargs: dict[str, Any], buckets: int, per_bucket: int) -> None:
    policy = Policy(**kwargs)
    assert policy.counts_rates
    assert policy.bucket_count == buckets
    assert policy.rate_bucket_calls == per_bucket
    assert policy.rate_width == 0.0


def test_count_windows_that_cannot_slide_or_fill_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        Policy(failure_rate=0.5, window_calls=13, minimum_calls=5)  # a prime over 10
    assert caught.value.field == "window_calls"
    with pytest.raises(ConfigError) as caught:
        Policy(failure_rate=0.5, window_calls=7)  # minimum_calls=10 can never be reached
    assert caught.value.field == "minimum_calls"


def test_time_window_geometry() -> None:
    policy = Policy(failure_rate=0.5, window=60.0, buckets=6, failures=3, within=12.0)
    assert policy.bucket_count == 6
    assert policy.rate_width == 10.0
    assert policy.within_width == 2.0
    assert policy.rate_bucket_calls == 0


def test_failures_within_uses_default_buckets() -> None:
    policy = Policy(failures=5, within=10.0)
    assert policy.bucket_count == 10
    assert policy.within_width == 1.0
    assert policy.counts_rates is False


# --------------------------------------------------------------------------- open duration


def test_open_duration_without_backoff_is_reset_after() -> None:
    policy = Policy(reset_after=5.0)
    assert [policy.open_duration(trips, 0.9) for trips in (0, 1, 2, 50)] == [5.0] * 4


def test_backoff_grows_per_trip_and_is_capped() -> None:
    policy = Policy(reset_after=1.0, backoff=2.0, max_reset_after=10.0)
    durations = [policy.open_duration(trips, 0.5) for trips in range(1, 7)]
    assert durations == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_overflow_falls_back_to_the_cap() -> None:
    policy = Policy(reset_after=1.0, backoff=10.0, max_reset_after=3600.0)
    with pytest.raises(OverflowError):
        _ = 10.0 ** (5000 - 1)  # what open_duration must survive
    assert policy.open_duration(5000, 0.5) == 3600.0
    assert policy.open_duration(10**30, 0.5) == 3600.0


def test_jitter_spreads_symmetrically_around_the_duration() -> None:
    policy = Policy(reset_after=10.0, jitter=0.2)
    assert policy.open_duration(1, 0.0) == pytest.approx(8.0)
    assert policy.open_duration(1, 0.5) == pytest.approx(10.0)
    assert policy.open_duration(1, 1.0) == pytest.approx(12.0)
    for draw in (0.0, 0.1, 0.25, 0.4):
        low = policy.open_duration(1, draw)
        high = policy.open_duration(1, 1.0 - draw)
        assert (low + high) / 2 == pytest.approx(10.0)
        assert low <= 10.0 <= high


def test_jitter_applies_after_the_cap() -> None:
    policy = Policy(reset_after=1.0, backoff=3.0, max_reset_after=5.0, jitter=0.5)
    assert policy.open_duration(10, 0.0) == pytest.approx(2.5)
    assert policy.open_duration(10, 1.0) == pytest.approx(7.5)
