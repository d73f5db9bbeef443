"""OpenTelemetry metrics for breakers (the ``breaker-machines[otel]`` extra).

``instrument(breaker, registry, ..., meter_provider=None)`` reports, on the meter
``breaker_machines`` of the given (or the global) meter provider:

``breaker.calls`` (observable counter, ``{call}``; ``breaker.name``, ``breaker.outcome``)
    Guarded calls by outcome: ``success``, ``failure``, ``timeout``, ``ignored``,
    ``cancelled``.
``breaker.rejections`` (observable counter, ``{call}``; ``breaker.name``, ``breaker.reason``)
    Calls refused without running: ``open`` (a :class:`~breaker_machines.CircuitOpenError`,
    whatever opened the circuit) or ``bulkhead`` (a
    :class:`~breaker_machines.BulkheadFullError`).
``breaker.state`` (observable gauge, ``1``; ``breaker.name``, ``breaker.state``)
    One point per state: 1 for the circuit's current state, 0 for the others.
``breaker.call.duration`` (histogram, ``s``; ``breaker.name``, ``breaker.outcome``)
    How long guarded calls took, by the breaker's clock.

The counters and the gauge are read from the breakers when the meter collects, at no cost
per call; the durations come from a call observer (see
:meth:`~breaker_machines.Breaker.add_call_observer`) attached to every instrumented
breaker, including those a :class:`~breaker_machines.BreakerRegistry` makes later. The
returned :class:`Instrumentation` adds and removes targets, and ``close()`` detaches
everything. opentelemetry is imported by this module only.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterable
from importlib import metadata
from types import TracebackType
from typing import Final

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, MeterProvider, Observation

from ._base import BreakerBase
from ._core.errors import ConfigError
from ._core.status import Outcome, State
from .callbacks import CallObserver
from .registry import BreakerRegistry

__all__ = ["METER_NAME", "Instrumentation", "instrument"]

METER_NAME: Final = "breaker_machines"
"""The name of the meter (its instrumentation scope) the metrics are reported on."""

# OpenTelemetry's recommended boundaries for durations in seconds (HTTP semantic conventions).
_DURATION_BOUNDARIES: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
_STATES: Final = tuple(State)

Target = BreakerBase | BreakerRegistry
"""What can be instrumented: a ``Breaker``, a ``ThreadedBreaker`` or a ``BreakerRegistry``."""


def _version() -> str | None:
    try:
        return metadata.version("breaker-machines")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return None


class _Shared:
    """The instruments of one Meter, and the handles reporting on it.

    A Meter keeps the first instrument registered under a name and ignores later ones
    (with their callbacks), so every ``instrument()`` on one meter shares these.
    """

    def __init__(self, meter: Meter) -> None:
        self.lock: threading.Lock = threading.Lock()
        self.handles: list[Instrumentation] = []
        # Breakers with our call observer, and how many handles want it there.
        self.observed: weakref.WeakKeyDictionary[BreakerBase, tuple[CallObserver, int]] = (
            weakref.WeakKeyDictionary()
        )
        meter.create_observable_counter(
            "breaker.calls",
            callbacks=[self._calls],
            unit="{call}",
            description="Calls guarded by the circuit breaker, by outcome.",
        )
        meter.create_observable_counter(
            "breaker.rejections",
            callbacks=[self._rejections],
            unit="{call}",
            description="Calls the circuit breaker refused without running them, by reason.",
        )
        meter.create_observable_gauge(
            "breaker.state",
            callbacks=[self._states],
            unit="1",
            description="The circuit's state: 1 for the current state, 0 for the others.",
        )
        description = "Duration of calls guarded by the circuit breaker, by outcome."
        try:
            self.duration: Histogram = meter.create_histogram(
                "breaker.call.duration",
                unit="s",
                description=description,
                explicit_bucket_boundaries_advisory=_DURATION_BOUNDARIES,
            )
        except TypeError:  # pragma: no cover - opentelemetry-api < 1.23 has no advisory
            self.duration = meter.create_histogram(
                "breaker.call.duration", unit="s", description=description
            )

    def breakers(self) -> list[BreakerBase]:
        """Every breaker some open handle reports, once each."""
        with self.lock:
            seen: dict[int, BreakerBase] = {}
            for handle in self.handles:
                for breaker in handle._targets():
                    seen.setdefault(id(breaker), breaker)
        return list(seen.values())

    def _calls(self, options: CallbackOptions) -> Iterable[Observation]:
        for breaker in self.breakers():
            name = breaker.name
            for outcome, count in breaker._outcome_counts():
                yield Observation(count, {"breaker.name": name, "breaker.outcome": outcome.value})

    def _rejections(self, options: CallbackOptions) -> Iterable[Observation]:
        for breaker in self.breakers():
            name = breaker.name
            yield Observation(breaker._rejections, {"breaker.name": name, "breaker.reason": "open"})
            yield Observation(
                breaker._bulkhead_rejections, {"breaker.name": name, "breaker.reason": "bulkhead"}
            )

    def _states(self, options: CallbackOptions) -> Iterable[Observation]:
        for breaker in self.breakers():
            name = breaker.name
            current = breaker.state
            for state in _STATES:
                value = 1 if state is current else 0
                yield Observation(value, {"breaker.name": name, "breaker.state": state.value})

    def attach(self, breaker: BreakerBase) -> None:
        """Take one reference on ``breaker``'s duration observer (call under the lock)."""
        entry = self.observed.get(breaker)
        if entry is not None:
            self.observed[breaker] = (entry[0], entry[1] + 1)
            return
        observer = _recorder(self.duration, breaker.name)
        breaker.add_call_observer(observer)
        self.observed[breaker] = (observer, 1)

    def detach(self, breaker: BreakerBase) -> None:
        """Drop one reference; the last removes the observer (call under the lock)."""
        entry = self.observed.get(breaker)
        if entry is None:
            return
        observer, count = entry
        if count > 1:
            self.observed[breaker] = (observer, count - 1)
            return
        del self.observed[breaker]
        with contextlib.suppress(ConfigError):  # unless someone removed it by hand
            breaker.remove_call_observer(observer)


def _recorder(histogram: Histogram, name: str) -> CallObserver:
    """A call observer recording durations of breaker ``name`` into ``histogram``."""
    attributes = {
        outcome: {"breaker.name": name, "breaker.outcome": outcome.value} for outcome in Outcome
    }
    record = histogram.record

    def observe(outcome: Outcome, duration: float) -> None:
        record(duration, attributes[outcome])

    return observe


_SHARED: weakref.WeakKeyDictionary[Meter, _Shared] = weakref.WeakKeyDictionary()
_SHARED_LOCK: Final = threading.Lock()


def _shared(meter: Meter) -> _Shared:
    with _SHARED_LOCK:
        shared = _SHARED.get(meter)
        if shared is None:
            shared = _Shared(meter)
            with contextlib.suppress(TypeError):  # a Meter that takes no weak reference
                _SHARED[meter] = shared
        return shared


class Instrumentation:
    """Breakers and registries reporting metrics on one meter; from :func:`instrument`.

    Breakers are held weakly (a breaker that is garbage stops being reported); registries
    are held until removed. ``close()`` (or leaving ``with``) stops reporting them all.
    """

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._breakers: weakref.WeakSet[BreakerBase] = weakref.WeakSet()
        self._registries: list[BreakerRegistry] = []
        self._attached: weakref.WeakSet[BreakerBase] = weakref.WeakSet()
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def add(self, *targets: Target) -> None:
        """Report these breakers and registries too (a registry: also those it makes later)."""
        _check(targets)
        shared = self._shared
        with shared.lock:
            if self._closed:
                raise ConfigError("instrumentation", self, "is closed")
            for target in targets:
                if isinstance(target, BreakerRegistry):
                    if any(known is target for known in self._registries):
                        continue
                    self._registries.append(target)
                    target.add_creation_observer(self._created)
                    for breaker in target.breakers():
                        self._attach(breaker)
                else:
                    self._breakers.add(target)
                    self._attach(target)

    def remove(self, *targets: Target) -> None:
        """Stop reporting these breakers and registries (each must have been added)."""
        _check(targets)
        shared = self._shared
        with shared.lock:
            for target in targets:
                if isinstance(target, BreakerRegistry):
                    if not any(known is target for known in self._registries):
                        raise ConfigError("targets", target, "is not instrumented here")
                elif target not in self._breakers:
                    raise ConfigError("targets", target, "is not instrumented here")
            for target in targets:
                if isinstance(target, BreakerRegistry):
                    self._registries = [known for known in self._registries if known is not target]
                    target.remove_creation_observer(self._created)
                else:
                    self._breakers.discard(target)
            kept = {id(breaker) for breaker in self._targets()}
            for breaker in list(self._attached):
                if id(breaker) not in kept:
                    self._attached.discard(breaker)
                    shared.detach(breaker)

    def close(self) -> None:
        """Stop reporting every target and detach the call observers (idempotent)."""
        shared = self._shared
        with shared.lock:
            if self._closed:
                return
            self._closed = True
            shared.handles = [handle for handle in shared.handles if handle is not self]
            for registry in self._registries:
                registry.remove_creation_observer(self._created)
            for breaker in list(self._attached):
                shared.detach(breaker)
            self._registries = []
            self._breakers = weakref.WeakSet()
            self._attached = weakref.WeakSet()

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _targets(self) -> list[BreakerBase]:
        """The breakers reported now (call under the shared lock)."""
        found: dict[int, BreakerBase] = {id(breaker): breaker for breaker in self._breakers}
        for registry in self._registries:
            for breaker in registry.breakers():
                found.setdefault(id(breaker), breaker)
        return list(found.values())

    def _attach(self, breaker: BreakerBase) -> None:
        if breaker not in self._attached:
            self._attached.add(breaker)
            self._shared.attach(breaker)

    def _created(self, breaker: BreakerBase) -> None:
        """A registry made a breaker: observe its calls."""
        with self._shared.lock:
            if not self._closed:
                self._attach(breaker)


def _check(targets: tuple[object, ...]) -> None:
    for target in targets:
        if not isinstance(target, (BreakerBase, BreakerRegistry)):
            raise ConfigError(
                "targets", target, "must be a Breaker, a ThreadedBreaker or a BreakerRegistry"
            )


def instrument(*targets: Target, meter_provider: MeterProvider | None = None) -> Instrumentation:
    """Report metrics of ``targets`` (breakers, registries) through OpenTelemetry.

    Uses the meter :data:`METER_NAME` of ``meter_provider``, or of the global meter provider
    (``opentelemetry.metrics.get_meter_provider()``) when it is None. Several calls on one
    provider share its instruments; a breaker instrumented twice there is reported once.
    Returns the :class:`Instrumentation`: ``.add()``, ``.remove()``, ``.close()``.
    """
    _check(targets)
    if meter_provider is None:
        meter_provider = metrics.get_meter_provider()
    elif not isinstance(meter_provider, MeterProvider):
        raise ConfigError(
            "meter_provider", meter_provider, "must be an opentelemetry MeterProvider"
        )
    shared = _shared(meter_provider.get_meter(METER_NAME, _version()))
    handle = Instrumentation(shared)
    with shared.lock:
        shared.handles.append(handle)
    handle.add(*targets)
    return handle
