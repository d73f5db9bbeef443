"""Circuits declared on classes: ``charge = circuit(failures=3, within=60)`` in a class body.

A declaration is a descriptor. :func:`circuit` makes one breaker per declaration, shared by
every instance of the class (and of its subclasses), or with ``per_instance=True`` one
breaker per instance; :func:`template` makes one :class:`~breaker_machines.BreakerRegistry`
per declaration, for per-key breakers. ``@charge.protect`` guards a method with the circuit
``self.charge`` resolves to, and :func:`circuits_of` lists the breakers of a class or an
instance, to start their runners.

Nothing here keeps an instance alive: declarations (class attributes) hold breakers and
registries, which hold no reference to the instances that use them, and per-instance
breakers are found by a weak reference to their instance. Drop the instance and it is
garbage collected, taking its per-instance breakers with it.
"""

from __future__ import annotations

import functools
import itertools
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, Final, Generic, Literal, ParamSpec, TypeVar, overload

from ._base import check_template_options
from ._core.errors import ConfigError
from .breaker import Breaker
from .callbacks import is_async, refuse_non_functions
from .registry import BreakerRegistry
from .storage.memory import MemoryStorage
from .storage.shared import SharedStorage
from .threaded import ThreadedBreaker

__all__ = [
    "Circuit",
    "CircuitTemplate",
    "InstanceCircuit",
    "circuit",
    "circuits_of",
    "template",
    "templates_of",
]

B = TypeVar("B", bound="Breaker | ThreadedBreaker")
P = ParamSpec("P")
S = TypeVar("S")
T = TypeVar("T")

_REGISTRY_ONLY: Final = frozenset({"prefix", "max_size", "idle_after"})
#: Suffixes of per-instance breaker names: unique in the process, never reused.
_INSTANCE_NUMBERS: Final = itertools.count(1)
#: Held while a per-instance breaker is made (so two threads cannot make two).
_MAKING: Final = threading.Lock()


def _check_options(options: dict[str, Any]) -> None:
    """ConfigError naming the first option that is not an option of Breaker."""
    for option, value in options.items():
        if option in _REGISTRY_ONLY:
            raise ConfigError(option, value, "is an option of template(), not of circuit()")
    check_template_options(options, name_is="is the declaration's (circuit(name=...))")


def _check_flag(field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(field, value, "must be True or False")


def _check_name(field: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(field, value, "must be a string (or None for the default)")


def _default_name(owner: type, attr: str) -> str:
    return f"{owner.__module__}.{owner.__qualname__}.{attr}"


class _Declaration(Generic[B]):
    """What a circuit declaration of either kind knows: its options, where it is declared."""

    #: Whether every instance has a breaker of its own.
    per_instance: bool = False

    def __init__(self, factory: type[B], name: str | None, options: dict[str, Any]) -> None:
        self._factory: type[B] = factory
        self._name = name
        self._options = options
        self._owner: type | None = None
        self._attr: str | None = None

    # -- where it is declared

    def __set_name__(self, owner: type, attr: str) -> None:
        if self._owner is not None:
            raise TypeError(
                f"this circuit is already declared as {self._where()}: a declaration names one "
                f"class attribute (declare another one for {owner.__qualname__}.{attr})"
            )
        self._owner = owner
        self._attr = attr
        if self._name is None:
            self._name = _default_name(owner, attr)

    def _where(self) -> str:
        if self._owner is None or self._attr is None:
            return "an undeclared circuit"
        return f"{self._owner.__qualname__}.{self._attr}"

    def _undeclared(self) -> TypeError:
        return TypeError(
            "this circuit was not declared in a class body (its __set_name__ was not "
            "called): write `attribute = circuit(...)` in the class statement"
        )

    @property
    def name(self) -> str:
        """The breaker's name: ``f"{owner.__module__}.{owner.__qualname__}.{attribute}"``
        unless one was given. Per-instance breakers add ``[n]`` to it."""
        if self._name is None:
            raise self._undeclared()
        return self._name

    @property
    def owner(self) -> type:
        """The class whose body declares this circuit."""
        if self._owner is None:
            raise self._undeclared()
        return self._owner

    @property
    def attribute(self) -> str:
        """The attribute name the circuit is declared under."""
        if self._attr is None:
            raise self._undeclared()
        return self._attr

    @property
    def threaded(self) -> bool:
        """Whether its breakers are threaded (:class:`~breaker_machines.ThreadedBreaker`)."""
        return self._factory is ThreadedBreaker

    def __set__(self, instance: object, value: object) -> None:
        raise AttributeError(f"{self._where()} is a circuit declaration: it cannot be assigned")

    def __delete__(self, instance: object) -> None:
        raise AttributeError(f"{self._where()} is a circuit declaration: it cannot be deleted")

    def __repr__(self) -> str:
        kind = type(self).__name__
        threads = ", threaded" if self.threaded else ""
        return f"<{kind} {self._name or '(undeclared)'!r}{threads}>"

    # -- the breaker of an instance

    def _lookup(self, instance: object) -> B:
        raise NotImplementedError

    # -- guarding methods

    @overload
    def protect(
        self: _Declaration[Breaker], method: Callable[Concatenate[S, P], Awaitable[T]], /
    ) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]: ...

    @overload
    def protect(
        self: _Declaration[ThreadedBreaker], method: Callable[Concatenate[S, P], T], /
    ) -> Callable[Concatenate[S, P], T]: ...

    def protect(self, method: Callable[..., Any], /) -> Callable[..., Any]:
        """Decorate a method (in the class body) so each call runs through the circuit.

        ``await self.pay(...)`` becomes ``await self.charge.call(pay, self, ...)``: the
        breaker is the one ``self.charge`` gives at call time (by attribute name), so a
        per-instance circuit guards each instance with its own breaker and a subclass that
        redeclares ``charge`` guards the inherited methods with its own circuit. The
        breaker's fallback, ``failure_if`` and timeout apply. A circuit of anyio breakers
        (:class:`~breaker_machines.Breaker`) protects ``async def`` methods; a threaded one
        protects plain methods. The method keeps its name, docstring and signature.
        """
        given: object = method
        if isinstance(given, (staticmethod, classmethod)):
            raise ConfigError(
                "method", method, "must be a plain method: protect guards calls on an instance"
            )
        refuse_non_functions("method", method)
        if not callable(method):
            raise ConfigError("method", method, "must be a method (a function)")
        declaration = self
        if self._factory is ThreadedBreaker:
            if is_async(method):
                raise ConfigError(
                    "method", method, "must be a sync method: a threaded circuit protects those"
                )

            @functools.wraps(method)
            def protected_sync(instance: Any, /, *args: Any, **kwargs: Any) -> Any:
                breaker = declaration._resolve(instance)
                return breaker.call(method, instance, *args, **kwargs)

            return protected_sync
        if not is_async(method):
            raise ConfigError(
                "method",
                method,
                "must be an async def method (for sync methods declare circuit(threaded=True))",
            )

        @functools.wraps(method)
        async def protected(instance: Any, /, *args: Any, **kwargs: Any) -> Any:
            breaker = declaration._resolve(instance)
            return await breaker.call(method, instance, *args, **kwargs)

        return protected

    def _resolve(self, instance: object) -> Any:
        """``getattr(instance, attribute)``, checked to be a breaker of this kind."""
        attr = self._attr
        if attr is None:
            raise self._undeclared()
        breaker = getattr(instance, attr)
        if not isinstance(breaker, self._factory):
            raise TypeError(
                f"{type(instance).__qualname__}.{attr} is {breaker!r}, not a "
                f"{self._factory.__name__}: the method is protected by {self._where()}, and "
                f"its subclass redeclared {attr} as something else"
            )
        return breaker


class Circuit(_Declaration[B]):
    """A circuit declared on a class and shared: one breaker for the class and its instances.

    Made by :func:`circuit`. ``Owner.attribute`` and ``instance.attribute`` are the same
    :class:`~breaker_machines.Breaker` (or :class:`~breaker_machines.ThreadedBreaker`),
    made when the class is created; subclasses inherit it unless they redeclare the
    attribute. The attribute cannot be assigned or deleted on an instance.
    """

    def __init__(self, factory: type[B], name: str | None, options: dict[str, Any]) -> None:
        super().__init__(factory, name, options)
        self._breaker: B | None = None

    def __set_name__(self, owner: type, attr: str) -> None:
        super().__set_name__(owner, attr)
        self._breaker = self._factory(self.name, **self._options)

    def __get__(self, instance: object, owner: type[Any] | None = None) -> B:
        breaker = self._breaker
        if breaker is None:
            raise self._undeclared()
        return breaker

    def _lookup(self, instance: object) -> B:
        return self.__get__(instance)


class InstanceCircuit(_Declaration[B]):
    """A circuit declared on a class with one breaker per instance.

    Made by ``circuit(per_instance=True)``. ``instance.attribute`` is that instance's
    breaker, made on first use and named ``f"{name}[n]"`` (``n`` counts the per-instance
    breakers of the process: a name is never reused, not even after its instance is
    gone). ``Owner.attribute`` is this declaration. Breakers are found through a weak
    reference to their instance, by identity: the instance is never kept alive by its
    breaker, two equal instances still have two breakers, and the class needs neither
    ``__hash__`` nor ``__eq__``. With an explicit ``storage=MemoryStorage()``, an
    instance's state is deleted from the storage when the instance is collected.
    """

    per_instance = True

    def __init__(self, factory: type[B], name: str | None, options: dict[str, Any]) -> None:
        super().__init__(factory, name, options)
        # id(instance) -> (weak reference to the instance, its breaker)
        self._breakers: dict[int, tuple[weakref.ref[Any], B]] = {}

    def __set_name__(self, owner: type, attr: str) -> None:
        if getattr(owner, "__weakrefoffset__", 1) == 0:
            raise TypeError(
                f"{owner.__qualname__}.{attr}: a per-instance circuit needs instances that "
                f"can be weakly referenced, and {owner.__qualname__} has __slots__ without "
                "'__weakref__': add '__weakref__' to its __slots__"
            )
        super().__set_name__(owner, attr)

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> InstanceCircuit[B]: ...

    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> B: ...

    def __get__(self, instance: object, owner: type[Any] | None = None) -> InstanceCircuit[B] | B:
        if instance is None:
            return self
        entry = self._breakers.get(id(instance))
        if entry is not None and entry[0]() is instance:
            return entry[1]
        return self._make(instance)

    def _lookup(self, instance: object) -> B:
        return self.__get__(instance)

    def _make(self, instance: object) -> B:
        if self._name is None:
            raise self._undeclared()
        key = id(instance)
        breakers = self._breakers
        with _MAKING:
            entry = breakers.get(key)
            if entry is not None and entry[0]() is instance:
                return entry[1]  # another thread made it first
            name = f"{self._name}[{next(_INSTANCE_NUMBERS)}]"
            breaker = self._factory(name, **self._options)
            storage = self._options.get("storage")

            def forget(dead: weakref.ref[Any]) -> None:
                # Called when the instance is collected (never with a reference to it),
                # by whichever thread the collection runs in: it takes no lock, as a
                # collection may run while this thread holds _MAKING.
                current = breakers.get(key)
                if current is not None and current[0] is dead:
                    breakers.pop(key, None)
                if isinstance(storage, MemoryStorage):
                    storage.delete(name)

            try:
                ref = weakref.ref(instance, forget)
            except TypeError:
                raise TypeError(
                    f"{self._where()} is a per-instance circuit, and a "
                    f"{type(instance).__qualname__} cannot be weakly referenced"
                ) from None
            breakers[key] = (ref, breaker)
            return breaker

    def breakers(self) -> list[B]:
        """The breakers of the instances alive now that have used this circuit."""
        return [breaker for ref, breaker in list(self._breakers.values()) if ref() is not None]


class CircuitTemplate:
    """A template declared on a class: one :class:`~breaker_machines.BreakerRegistry`.

    Made by :func:`template`. ``Owner.attribute`` and ``instance.attribute`` are the same
    registry (shared by the class, its subclasses and all their instances), so
    ``self.per_host.get(host)`` is the breaker of ``host``. Its prefix is
    ``f"{owner.__module__}.{owner.__qualname__}.{attribute}:"`` unless one was given.
    """

    def __init__(
        self,
        prefix: str | None,
        max_size: int,
        idle_after: float | None,
        options: dict[str, Any],
    ) -> None:
        self._prefix = prefix
        self._max_size = max_size
        self._idle_after = idle_after
        self._options = options
        self._owner: type | None = None
        self._attr: str | None = None
        self._registry: BreakerRegistry | None = None

    def __set_name__(self, owner: type, attr: str) -> None:
        if self._owner is not None:
            raise TypeError(
                f"this template is already declared as {self._owner.__qualname__}."
                f"{self._attr}: a declaration names one class attribute"
            )
        self._owner = owner
        self._attr = attr
        prefix = self._prefix
        if prefix is None:
            prefix = _default_name(owner, attr) + ":"
        self._registry = BreakerRegistry(
            prefix, max_size=self._max_size, idle_after=self._idle_after, **self._options
        )

    def __get__(self, instance: object, owner: type[Any] | None = None) -> BreakerRegistry:
        registry = self._registry
        if registry is None:
            raise TypeError(
                "this template was not declared in a class body (its __set_name__ was not "
                "called): write `attribute = template(...)` in the class statement"
            )
        return registry

    def __set__(self, instance: object, value: object) -> None:
        raise AttributeError(f"{self._where()} is a template declaration: it cannot be assigned")

    def __delete__(self, instance: object) -> None:
        raise AttributeError(f"{self._where()} is a template declaration: it cannot be deleted")

    def _where(self) -> str:
        if self._owner is None:
            return "an undeclared template"
        return f"{self._owner.__qualname__}.{self._attr}"

    def __repr__(self) -> str:
        prefix = self._registry.prefix if self._registry is not None else self._prefix
        return f"<CircuitTemplate {prefix or '(undeclared)'!r}>"


@overload
def circuit(
    name: str | None = None,
    *,
    per_instance: Literal[False] = False,
    threaded: Literal[False] = False,
    **options: Any,
) -> Circuit[Breaker]: ...


@overload
def circuit(
    name: str | None = None,
    *,
    per_instance: Literal[False] = False,
    threaded: Literal[True],
    **options: Any,
) -> Circuit[ThreadedBreaker]: ...


@overload
def circuit(
    name: str | None = None,
    *,
    per_instance: Literal[True],
    threaded: Literal[False] = False,
    **options: Any,
) -> InstanceCircuit[Breaker]: ...


@overload
def circuit(
    name: str | None = None,
    *,
    per_instance: Literal[True],
    threaded: Literal[True],
    **options: Any,
) -> InstanceCircuit[ThreadedBreaker]: ...


@overload
def circuit(
    name: str | None = None,
    *,
    per_instance: bool = False,
    threaded: bool = False,
    **options: Any,
) -> Circuit[Any] | InstanceCircuit[Any]: ...


def circuit(
    name: str | None = None,
    *,
    per_instance: bool = False,
    threaded: bool = False,
    **options: Any,
) -> Circuit[Any] | InstanceCircuit[Any]:
    """Declare a circuit in a class body: ``charge = circuit(failures=3, within=60)``.

    ``options`` are the :ref:`breaker options <breaker-options>`; they are checked here,
    when the class body runs, so a misspelt or invalid option raises
    :class:`~breaker_machines.ConfigError` (naming it) when the module is imported.

    Args:
        name: The breaker's name; by default
            ``f"{owner.__module__}.{owner.__qualname__}.{attribute}"``. In a shared
            storage the name is the circuit: the same name in two processes is one circuit.
        per_instance: One breaker per instance (an :class:`InstanceCircuit`) instead of one
            for the class (a :class:`Circuit`). Refused with a shared storage: an instance
            lives in one process, so its state has nothing to share.
        threaded: Make threaded breakers (:class:`~breaker_machines.ThreadedBreaker`, for
            sync code) instead of anyio ones (:class:`~breaker_machines.Breaker`).
        **options: Breaker options, as for ``Breaker(name, **options)``.
    """
    _check_name("name", name)
    _check_flag("per_instance", per_instance)
    _check_flag("threaded", threaded)
    _check_options(options)
    if per_instance and isinstance(options.get("storage"), SharedStorage):
        raise ConfigError(
            "per_instance",
            per_instance,
            "cannot be used with a shared storage: an instance lives in one process, and "
            "its breaker's name would name a different circuit in every process (use "
            "template() and a key that means the same thing in every process)",
        )
    probe = f"{name or 'circuit'}<declaration>"
    options = dict(options)
    if threaded:
        ThreadedBreaker(probe, **options)  # validate the options, now
        if per_instance:
            return InstanceCircuit(ThreadedBreaker, name, options)
        return Circuit(ThreadedBreaker, name, options)
    Breaker(probe, **options)  # validate the options, now
    if per_instance:
        return InstanceCircuit(Breaker, name, options)
    return Circuit(Breaker, name, options)


def template(
    prefix: str | None = None,
    *,
    max_size: int = 1024,
    idle_after: float | None = None,
    **options: Any,
) -> CircuitTemplate:
    """Declare per-key circuits in a class body: ``per_host = template(failures=5)``.

    The attribute is a :class:`~breaker_machines.BreakerRegistry` making one breaker per
    key from ``options`` (``self.per_host.get(host)``), one registry for the class, its
    subclasses and all their instances. Its options are checked here, when the class
    body runs (:class:`~breaker_machines.ConfigError` naming the field).

    Args:
        prefix: Breaker names are ``prefix + key``; by default
            ``f"{owner.__module__}.{owner.__qualname__}.{attribute}:"``.
        max_size: At most this many breakers are kept (see the registry).
        idle_after: Drop breakers unused this long (seconds) that are healthy.
        **options: Breaker options: the template of every breaker.
    """
    _check_name("prefix", prefix)
    # Everything the registry would refuse, refused now.
    BreakerRegistry(
        "" if prefix is None else prefix, max_size=max_size, idle_after=idle_after, **options
    )
    return CircuitTemplate(prefix, max_size, idle_after, dict(options))


def _declarations(obj: object) -> list[tuple[str, object]]:
    """The attributes of ``obj``'s class (or of ``obj``, a class) that are declarations,
    bases' first, each as the most derived class declares it."""
    cls: type = obj if isinstance(obj, type) else type(obj)
    # A subclass's value replaces its base's, in the base's place.
    found = {attr: value for klass in reversed(cls.__mro__) for attr, value in vars(klass).items()}
    return [
        (attr, value)
        for attr, value in found.items()
        if isinstance(value, (_Declaration, CircuitTemplate))
    ]


@overload
def circuits_of(obj: object, *, threaded: Literal[False] = False) -> list[Breaker]: ...


@overload
def circuits_of(obj: object, *, threaded: Literal[True]) -> list[ThreadedBreaker]: ...


@overload
def circuits_of(obj: object, *, threaded: bool) -> list[Breaker] | list[ThreadedBreaker]: ...


def circuits_of(obj: object, *, threaded: bool = False) -> list[Breaker] | list[ThreadedBreaker]:
    """The breakers of the circuits declared on a class, or used by an instance.

    For a class: the breakers of its shared circuits (:class:`Circuit`), inherited ones
    included. For an instance: those, and its own breakers of the per-instance circuits
    (made now if it has not used them yet). Bases' declarations come first, in
    declaration order. Only the anyio breakers (:class:`~breaker_machines.Breaker`), the ones
    with runners: ``async with running(*circuits_of(client)): ...``; with ``threaded=True``,
    the threaded ones (:class:`~breaker_machines.ThreadedBreaker`) instead. A breaker has at
    most one runner: with many instances, start the runners of the class's circuits once
    (``circuits_of(Owner)``). Templates are listed by :func:`templates_of`.
    """
    _check_flag("threaded", threaded)
    instance = not isinstance(obj, type)
    found: list[Any] = []
    for _, value in _declarations(obj):
        if not isinstance(value, _Declaration) or value.threaded is not threaded:
            continue
        if isinstance(value, InstanceCircuit):
            if instance:
                found.append(value._lookup(obj))
        else:
            found.append(value._lookup(obj))
    return found


def templates_of(obj: object) -> list[BreakerRegistry]:
    """The registries of the templates declared on a class (or on an instance's class).

    Inherited declarations included, bases' first. Start their runners in a task group:
    ``await tg.start(registry.run)``.
    """
    return [
        value.__get__(obj) for _, value in _declarations(obj) if isinstance(value, CircuitTemplate)
    ]
