"""Records: immutable, slotted, and equal only to records of their own type."""

from __future__ import annotations

import pickle

import pytest

from breaker_machines._core import (
    EMPTY_WINDOW,
    Admitted,
    BreakerState,
    CallFinished,
    CallRequested,
    Disable,
    Enable,
    ForceClose,
    ForceOpen,
    LeaseExpired,
    Outcome,
    Persist,
    Probe,
    Rejected,
    RemoteObserved,
    Reset,
    State,
    Synced,
    Tick,
    Transitioned,
    WakeAt,
    Window,
)
from breaker_machines._core.status import Reason

ONE_FIELD_TIME = [CallRequested, Tick, ForceOpen, ForceClose, Reset, Disable, Enable]


def test_records_of_different_types_with_equal_fields_differ() -> None:
    assert Tick(1.0) != CallRequested(1.0)
    assert not (Tick(1.0) == CallRequested(1.0))  # noqa: SIM201 - __eq__ itself
    assert Persist(3) != WakeAt(3)
    assert Admitted(0, None) != (0, None)
    assert Admitted(0, None) != (0, None)
    assert Tick(1.0) != 1.0
    # Each pair of the one-field time events is distinct.
    events = [cls(1.0) for cls in ONE_FIELD_TIME]
    for i, a in enumerate(events):
        for j, b in enumerate(events):
            assert (a == b) is (i == j)
            assert (a != b) is (i != j)


def test_records_of_the_same_type_compare_and_hash_by_value() -> None:
    assert Tick(1.0) == Tick(1.0)
    assert Tick(1.0) != Tick(2.0)
    assert hash(Tick(1.0)) == hash(Tick(1.0))
    assert len({Tick(1.0), Tick(1.0), CallRequested(1.0), Reset(1.0)}) == 3
    assert {Persist(1): "a"}[Persist(1)] == "a"
    assert WakeAt(3) not in {Persist(3): None}


def test_record_hashes_spread_over_class_and_fields() -> None:
    # Equal-field records of different classes, and records of one class with different
    # fields, hash apart (they would still be told apart by ``==``, but a constant or
    # field-blind hash turns every dict and set of records into a linear scan).
    events = [cls(1.0) for cls in ONE_FIELD_TIME]
    assert len({hash(event) for event in events}) == len(events)
    assert len({hash(Tick(float(t))) for t in range(50)}) == 50
    assert hash(Persist(3)) != hash(WakeAt(3))
    assert hash(Admitted(0, None)) != hash((0, None))


def test_state_enums_hash_by_identity() -> None:
    # The transition table is looked up by state on every event: members hash with the
    # C-level identity hash, not Enum's hash of the name.
    for enum_type in (State, Outcome, Reason):
        assert enum_type.__hash__ is object.__hash__
        member = next(iter(enum_type))
        assert hash(member) == object.__hash__(member)


def test_records_are_immutable_and_have_no_dict() -> None:
    state = BreakerState()
    with pytest.raises(AttributeError):
        state.version = 3  # type: ignore[misc]
    synced = Synced(0, 0, 0, EMPTY_WINDOW, EMPTY_WINDOW, 0.0)
    with pytest.raises(AttributeError):
        synced.version = 3  # type: ignore[misc]
    for record in (state, Tick(0.0), Admitted(0, None), Probe(1, 2.0), EMPTY_WINDOW, synced):
        assert not hasattr(record, "__dict__")


def test_state_defaults_are_a_fresh_closed_circuit() -> None:
    state = BreakerState()
    assert state.status is State.CLOSED
    assert state.version == 0
    assert state.failure_window is EMPTY_WINDOW
    assert state.rate_window == Window(0, (), 0, 0, 0)
    assert (state.opened_at, state.retry_at, state.probes, state.next_probe) == (None, None, (), 0)


def test_records_pickle_round_trip() -> None:
    records = [
        BreakerState(State.OPEN, 3, 0, 0, EMPTY_WINDOW, EMPTY_WINDOW, 1.0, 2.0, 1, (), 4),
        CallFinished(Outcome.TIMEOUT, 1.0, 0.5, 2, 7, 0.25),
        RemoteObserved(State.HALF_OPEN, 9, 1.0, None, 2, 5.0),
        Synced(4, 2, 1, Window(7, ((3, 1, 0), (2, 2, 1)), 5, 3, 1), EMPTY_WINDOW, 8.0, 0.75),
        Window(7, ((3, 1, 0),), 3, 1, 0),
        Transitioned(State.CLOSED, State.OPEN, Reason.FAILURE_RATE, 1),
        LeaseExpired(3, 4.0),
        Rejected(None),
    ]
    for record in records:
        copy = pickle.loads(pickle.dumps(record))
        assert copy == record
        assert type(copy) is type(record)


def test_call_finished_defaults() -> None:
    event = CallFinished(Outcome.SUCCESS, 1.0, 0.1, 0)
    assert event.probe is None
    assert event.draw == 0.5


def test_synced_defaults_compares_and_hashes_as_a_record() -> None:
    window = Window(2, ((1, 1, 0),), 1, 1, 0)
    event = Synced(3, 1, 0, window, EMPTY_WINDOW, 5.0)
    assert event.draw == 0.5
    assert event == Synced(3, 1, 0, Window(2, ((1, 1, 0),), 1, 1, 0), EMPTY_WINDOW, 5.0, 0.5)
    assert hash(event) == hash(Synced(3, 1, 0, window, EMPTY_WINDOW, 5.0))
    assert event != Synced(3, 1, 0, window, EMPTY_WINDOW, 5.0, 0.25)
    assert event != Synced(4, 1, 0, window, EMPTY_WINDOW, 5.0)
    # Equal only to a Synced: not to a bare tuple, nor to its windows as bare tuples.
    assert event != (3, 1, 0, window, EMPTY_WINDOW, 5.0, 0.5)
    assert event != Synced(3, 1, 0, tuple(window), EMPTY_WINDOW, 5.0)  # type: ignore[arg-type]
    assert window != (2, ((1, 1, 0),), 1, 1, 0)
    assert len({event, Synced(3, 1, 0, window, EMPTY_WINDOW, 5.0), Tick(5.0)}) == 2
