"""The pure core: ``step(policy, state, event) -> Step(state, effects)``.

No I/O, no clock, no randomness, no async library: a test imports this package in a fresh
interpreter and checks that none of those modules were loaded.
"""

from .errors import ConfigError, InvalidEvent
from .policy import Policy
from .records import (
    EMPTY_WINDOW,
    Admitted,
    BreakerState,
    CallFinished,
    CallRequested,
    Disable,
    Effect,
    Enable,
    Event,
    ForceClose,
    ForceOpen,
    LeaseExpired,
    Persist,
    Probe,
    Rejected,
    RemoteObserved,
    Reset,
    Step,
    Synced,
    Tick,
    Transitioned,
    WakeAt,
    Window,
)
from .relations import (
    RECOVERY_ALLOWED,
    Relations,
    allows_recovery,
    cascade_targets,
    check_relations,
    is_held,
)
from .shortcuts import add_failures, failures_until_trip, inert_success, rejection_delay
from .status import Outcome, Reason, State
from .transitions import EDGES, MANUAL, TABLE, step
from .window import totals_at

__all__ = [
    "EDGES",
    "EMPTY_WINDOW",
    "MANUAL",
    "RECOVERY_ALLOWED",
    "TABLE",
    "Admitted",
    "BreakerState",
    "CallFinished",
    "CallRequested",
    "ConfigError",
    "Disable",
    "Effect",
    "Enable",
    "Event",
    "ForceClose",
    "ForceOpen",
    "InvalidEvent",
    "LeaseExpired",
    "Outcome",
    "Persist",
    "Policy",
    "Probe",
    "Reason",
    "Rejected",
    "Relations",
    "RemoteObserved",
    "Reset",
    "State",
    "Step",
    "Synced",
    "Tick",
    "Transitioned",
    "WakeAt",
    "Window",
    "add_failures",
    "allows_recovery",
    "cascade_targets",
    "check_relations",
    "failures_until_trip",
    "inert_success",
    "is_held",
    "rejection_delay",
    "step",
    "totals_at",
]
