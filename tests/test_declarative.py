"""Circuits declared on classes: ``circuit()``, ``template()``, ``protect``, ``circuits_of()``."""

from __future__ import annotations

import copy
import gc
import inspect
import re
import sys
import threading
import weakref
from collections.abc import Generator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from breaker_machines import (
    Breaker,
    BreakerRegistry,
    Circuit,
    CircuitOpenError,
    CircuitTemplate,
    ConfigError,
    InstanceCircuit,
    MemoryStorage,
    State,
    ThreadedBreaker,
    Transition,
    circuit,
    circuits_of,
    running,
    template,
    templates_of,
)
from breaker_machines.storage import RedisStorage

pytestmark = pytest.mark.anyio

HERE = __name__


class Boom(Exception):
    pass


@contextmanager
def refused_at_class_creation(kind: type[BaseException], match: str) -> Generator[None, None, None]:
    """An error raised by a ``__set_name__``: Python < 3.12 wraps it in a RuntimeError."""
    with pytest.raises((kind, RuntimeError)) as info:
        yield
    error: BaseException | None = info.value
    if sys.version_info < (3, 12):
        assert isinstance(error, RuntimeError)
        assert "__set_name__" in str(error)
        error = error.__cause__
    assert isinstance(error, kind)
    assert re.search(match, str(error)), str(error)


async def fail() -> None:
    raise Boom


class PaymentClient:
    """A client with one circuit of each kind."""

    charge = circuit(consecutive_failures=2, reset_after=10)
    session = circuit(per_instance=True, consecutive_failures=1)
    per_host = template(consecutive_failures=1, max_size=3)
    ledger = circuit(threaded=True, consecutive_failures=1)

    def __init__(self) -> None:
        self.calls = 0

    @charge.protect
    async def pay(self, amount: int, *, currency: str = "EUR") -> str:
        """Charge ``amount``."""
        self.calls += 1
        if amount < 0:
            raise Boom
        return f"{amount} {currency}"

    @session.protect
    async def ping(self, ok: bool) -> bool:
        if not ok:
            raise Boom
        return ok

    @ledger.protect
    def book(self, entry: str) -> str:
        """Book ``entry`` (sync)."""
        if not entry:
            raise Boom
        return entry.upper()

    async def fetch(self, host: str, ok: bool) -> str:
        async with self.per_host.get(host).guard():
            if not ok:
                raise Boom
            return host


@pytest.fixture(autouse=True)
def _fresh_payment_client() -> Iterator[None]:
    """PaymentClient's class-level circuits outlive a test: start each test closed."""
    yield
    for breaker in [*circuits_of(PaymentClient), *circuits_of(PaymentClient, threaded=True)]:
        breaker.reset()
    for registry in templates_of(PaymentClient):
        for breaker in registry.breakers():
            breaker.reset()


# ---------------------------------------------------------------- sharing


async def test_a_class_circuit_is_one_breaker_for_the_class_and_its_instances() -> None:
    one, two = PaymentClient(), PaymentClient()
    assert isinstance(PaymentClient.charge, Breaker)
    assert one.charge is two.charge is PaymentClient.charge
    for _ in range(2):
        with pytest.raises(Boom):
            await one.pay(-1)
    assert one.charge.state is State.OPEN
    with pytest.raises(CircuitOpenError):
        await two.pay(5)  # tripped through one instance, the other is rejected
    assert two.calls == 0


async def test_per_instance_circuits_are_separate() -> None:
    one, two = PaymentClient(), PaymentClient()
    assert isinstance(one.session, Breaker)
    assert one.session is one.session
    assert one.session is not two.session
    assert isinstance(PaymentClient.__dict__["session"], InstanceCircuit)
    with pytest.raises(Boom):
        await one.ping(False)
    assert one.session.state is State.OPEN
    assert two.session.state is State.CLOSED
    assert await two.ping(True)
    with pytest.raises(CircuitOpenError):
        await one.ping(True)


def test_class_access_to_a_per_instance_circuit_is_the_declaration() -> None:
    declaration = PaymentClient.session
    assert isinstance(declaration, InstanceCircuit)
    assert declaration is PaymentClient.__dict__["session"]
    assert declaration.per_instance
    assert not declaration.threaded
    assert declaration.owner is PaymentClient
    assert declaration.attribute == "session"
    assert declaration.name == f"{HERE}.PaymentClient.session"
    assert repr(declaration) == f"<InstanceCircuit '{HERE}.PaymentClient.session'>"
    shared = PaymentClient.__dict__["charge"]
    assert isinstance(shared, Circuit)
    assert not shared.per_instance
    assert repr(PaymentClient.__dict__["ledger"]).endswith(", threaded>")


def test_equal_and_unhashable_instances_still_have_their_own_breakers() -> None:
    @dataclass  # eq=True: unhashable, and equal when the fields are
    class Client:
        host: str
        breaker = circuit(per_instance=True)

    one, two = Client("a"), Client("a")
    assert one == two
    assert one.breaker is not two.breaker
    assert one.breaker is one.breaker
    assert copy.copy(one).breaker is not one.breaker  # the breaker is not in the object


def test_per_instance_breakers_lists_the_live_ones() -> None:
    class Client:
        breaker = circuit(per_instance=True)

    one, two = Client(), Client()
    assert Client.breaker.breakers() == []
    first, second = one.breaker, two.breaker
    assert Client.breaker.breakers() == [first, second]
    del one
    gc.collect()
    assert Client.breaker.breakers() == [second]


def test_per_instance_breakers_are_made_once_under_threads() -> None:
    class Client:
        breaker = circuit(per_instance=True, threaded=True)

    client = Client()
    barrier = threading.Barrier(8)
    seen: list[ThreadedBreaker] = []

    def first_use() -> None:
        barrier.wait()
        seen.append(client.breaker)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    assert all(breaker is seen[0] for breaker in seen)
    assert Client.breaker.breakers() == [seen[0]]


def test_declarations_are_read_only_on_instances() -> None:
    client = PaymentClient()
    with pytest.raises(AttributeError, match=r"PaymentClient\.charge is a circuit declaration"):
        client.charge = Breaker("other")
    with pytest.raises(AttributeError, match="cannot be deleted"):
        del client.session
    with pytest.raises(AttributeError, match="template declaration"):
        client.per_host = BreakerRegistry()
    with pytest.raises(AttributeError, match="cannot be deleted"):
        del client.per_host


# ---------------------------------------------------------------- garbage collection


def _collected(ref: weakref.ref[Any]) -> bool:
    gc.collect()
    return ref() is None


async def test_an_owner_is_collected_after_using_every_kind_of_circuit() -> None:
    storage = MemoryStorage()

    class Client:
        shared = circuit(consecutive_failures=1)
        own = circuit(per_instance=True, consecutive_failures=1, storage=storage)
        sync_own = circuit(per_instance=True, threaded=True)
        keyed = template(consecutive_failures=1)

        @own.protect
        async def call(self, ok: bool) -> bool:
            if not ok:
                raise Boom
            return ok

        @sync_own.protect
        def work(self, ok: bool) -> bool:
            if not ok:
                raise Boom
            return ok

    async def use(client: Client) -> str:
        assert await client.call(True)
        with suppress(Boom):  # a failure: its traceback held the instance
            await client.call(False)
        with suppress(CircuitOpenError):
            await client.call(True)
        assert client.work(True)
        with suppress(Boom):
            client.work(False)
        try:
            async with client.shared.guard():
                raise Boom
        except Boom:
            pass
        async with client.keyed.get("host").guard():
            pass
        assert circuits_of(client)
        assert circuits_of(client, threaded=True)
        assert templates_of(client)
        async with running(*circuits_of(client)):
            pass
        return client.own.name

    client = Client()
    name = await use(client)
    assert name in storage.names()  # the breaker tripped: its state was persisted
    ref = weakref.ref(client)
    del client
    assert _collected(ref)
    assert Client.own.breakers() == []
    assert Client.sync_own.breakers() == []
    assert name not in storage.names()  # forgotten with its instance
    assert Client.shared.state is State.OPEN  # the class's circuits live on
    assert "host" in Client.keyed


@pytest.mark.parametrize("kind", ["shared", "per_instance", "threaded", "template"])
async def test_each_kind_of_circuit_lets_its_owner_go(kind: str) -> None:
    class Client:
        shared = circuit()
        own = circuit(per_instance=True)
        threaded = circuit(per_instance=True, threaded=True)
        keyed = template()

        @shared.protect
        async def via_shared(self) -> None:
            raise Boom

        @own.protect
        async def via_own(self) -> None:
            raise Boom

        @threaded.protect
        def via_threaded(self) -> None:
            raise Boom

    async def use(client: Client) -> None:
        try:
            if kind == "shared":
                await client.via_shared()
            elif kind == "per_instance":
                await client.via_own()
            elif kind == "threaded":
                client.via_threaded()
            else:
                async with client.keyed.get("key").guard():
                    raise Boom
        except Boom:
            pass

    client = Client()
    await use(client)
    ref = weakref.ref(client)
    del client
    assert _collected(ref)


# ---------------------------------------------------------------- templates


async def test_a_template_makes_per_key_breakers_with_its_options() -> None:
    one, two = PaymentClient(), PaymentClient()
    registry = one.per_host
    assert isinstance(registry, BreakerRegistry)
    assert registry is two.per_host is PaymentClient.per_host
    assert registry.prefix == f"{HERE}.PaymentClient.per_host:"
    assert registry.max_size == 3
    with pytest.raises(Boom):
        await one.fetch("a.example", False)  # consecutive_failures=1: open
    assert registry.get("a.example").state is State.OPEN
    assert registry.get("a.example").name == f"{HERE}.PaymentClient.per_host:a.example"
    with pytest.raises(CircuitOpenError):
        await two.fetch("a.example", True)
    assert await two.fetch("b.example", True) == "b.example"
    for key in ("c", "d", "e"):
        registry.get(key)
    assert len(registry) == 3  # max_size reached the registry


def test_template_options_prefix_and_idle_after() -> None:
    class Client:
        keyed = template("hosts/", idle_after=60, max_size=7, reset_after=5)

    registry = Client.keyed
    assert registry.prefix == "hosts/"
    assert registry.idle_after == 60
    assert registry.max_size == 7
    assert registry.get("x").name == "hosts/x"
    assert registry.get("x").policy.reset_after == 5
    declaration = Client.__dict__["keyed"]
    assert isinstance(declaration, CircuitTemplate)
    assert repr(declaration) == "<CircuitTemplate 'hosts/'>"


# ---------------------------------------------------------------- protect


async def test_protect_records_successes_and_failures() -> None:
    class Client:
        breaker = circuit(consecutive_failures=3)

        @breaker.protect
        async def call(self, ok: bool) -> str:
            if not ok:
                raise Boom
            return "ok"

    client = Client()
    assert await client.call(True) == "ok"
    assert await client.call(True) == "ok"
    with pytest.raises(Boom):
        await client.call(False)
    stats = client.breaker.stats()
    assert (stats.successes, stats.failures) == (2, 1)


async def test_protect_applies_the_fallback_and_failure_if() -> None:
    def fallback(error: BaseException) -> str:
        return f"fallback: {type(error).__name__}"

    def refused(result: object) -> bool:
        return result == "bad"

    class Client:
        breaker = circuit(fallback=fallback)
        refusing = circuit(failure_if=refused, consecutive_failures=1)

        @breaker.protect
        async def call(self) -> str:
            raise Boom

        @refusing.protect
        async def answer(self) -> str:
            return "bad"

    client = Client()
    assert await client.call() == "fallback: Boom"
    assert await client.answer() == "bad"  # counted as a failure, still returned
    assert client.refusing.state is State.OPEN


def test_protect_keeps_the_method_metadata() -> None:
    pay = PaymentClient.pay
    assert pay.__name__ == "pay"
    assert pay.__qualname__ == "PaymentClient.pay"
    assert pay.__doc__ == "Charge ``amount``."
    assert pay.__module__ == HERE
    assert inspect.iscoroutinefunction(pay)
    assert (
        str(inspect.signature(pay)) == "(self, amount: 'int', *, currency: 'str' = 'EUR') -> 'str'"
    )
    assert PaymentClient.book.__name__ == "book"
    assert PaymentClient.book.__doc__ == "Book ``entry`` (sync)."
    assert not inspect.iscoroutinefunction(PaymentClient.book)


async def test_protect_passes_arguments_through() -> None:
    client = PaymentClient()
    assert await client.pay(3, currency="USD") == "3 USD"
    assert await client.pay(amount=4) == "4 EUR"


def test_a_threaded_circuit_protects_sync_methods() -> None:
    client = PaymentClient()
    assert isinstance(client.ledger, ThreadedBreaker)
    assert client.book("entry") == "ENTRY"
    with pytest.raises(Boom):
        client.book("")
    assert client.ledger.state is State.OPEN
    with pytest.raises(CircuitOpenError):
        client.book("entry")


def test_protect_refuses_the_wrong_kind_of_method() -> None:
    async_one = circuit()
    threaded_one = circuit(threaded=True)

    def sync_method(self: object) -> None:
        pass

    async def async_method(self: object) -> None:
        pass

    with pytest.raises(ConfigError, match=r"must be an async def method"):
        async_one.protect(sync_method)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"must be a sync method"):
        threaded_one.protect(async_method)
    with pytest.raises(ConfigError, match=r"must be a plain method"):
        async_one.protect(staticmethod(async_method))
    with pytest.raises(ConfigError, match=r"must be a method"):
        async_one.protect(42)  # type: ignore[arg-type]


async def test_protect_needs_a_declared_circuit() -> None:
    loose = circuit()

    class Client:
        @loose.protect
        async def call(self) -> None:
            pass

    with pytest.raises(TypeError, match="not declared in a class body"):
        await Client().call()


# ---------------------------------------------------------------- subclasses


async def test_a_subclass_inherits_the_circuit() -> None:
    class Base:
        breaker = circuit(consecutive_failures=1)
        own = circuit(per_instance=True)

        @breaker.protect
        async def call(self) -> None:
            raise Boom

    class Child(Base):
        pass

    assert Child.breaker is Base.breaker
    assert Child().breaker is Base().breaker
    assert Child.own is Base.own
    assert Child().own is not Child().own
    with pytest.raises(Boom):
        await Child().call()
    assert Base.breaker.state is State.OPEN


async def test_a_subclass_that_redeclares_has_its_own_circuit() -> None:
    class Base:
        breaker = circuit(consecutive_failures=1)
        keyed = template()

        @breaker.protect
        async def call(self) -> None:
            raise Boom

    class Child(Base):
        breaker = circuit(consecutive_failures=2)
        keyed = template()

    assert Child.breaker is not Base.breaker
    assert Child.breaker.name == f"{HERE}.{Child.__qualname__}.breaker"
    assert Child.keyed is not Base.keyed
    with pytest.raises(Boom):
        await Child().call()  # the inherited method runs through Child's own circuit
    assert Child.breaker.stats().failures == 1
    assert Base.breaker.stats().failures == 0
    assert circuits_of(Child) == [Child.breaker]
    assert templates_of(Child) == [Child.keyed]


async def test_a_subclass_that_redeclares_as_another_kind_is_refused_at_call_time() -> None:
    class Base:
        breaker = circuit()

        @breaker.protect
        async def call(self) -> None:
            pass

    class Child(Base):
        breaker = circuit(threaded=True)  # type: ignore[assignment]

    with pytest.raises(TypeError, match=r"Child\.breaker is <ThreadedBreaker .*not a Breaker"):
        await Child().call()


# ---------------------------------------------------------------- names


def test_names() -> None:
    class Outer:
        class Client:
            default = circuit()
            named = circuit("payments")
            own = circuit(per_instance=True)
            own_named = circuit("session", per_instance=True)
            keyed = template()

    client = Outer.Client
    qualname = f"{HERE}.{client.__qualname__}"
    assert qualname.endswith(".<locals>.Outer.Client")
    assert client.default.name == f"{qualname}.default"
    assert client.named.name == "payments"
    assert client.__dict__["named"].name == "payments"
    assert client.keyed.prefix == f"{qualname}.keyed:"
    one, two = client(), client()
    first, second = one.own.name, two.own.name
    assert re.fullmatch(re.escape(f"{qualname}.own") + r"\[\d+\]", first)
    assert first != second
    assert re.fullmatch(r"session\[\d+\]", one.own_named.name)


def test_per_instance_names_are_never_reused() -> None:
    class Client:
        breaker = circuit(per_instance=True)

    names: set[str] = set()
    for _ in range(5):
        names.add(Client().breaker.name)  # each instance is collected at once
    assert len(names) == 5


# ---------------------------------------------------------------- validation


def test_option_typos_fail_when_the_class_is_created() -> None:
    with pytest.raises(ConfigError, match="failurs") as info:

        class Client:
            breaker = circuit(failurs=3)

    assert info.value.field == "failurs"
    assert "check its spelling" in str(info.value)


@pytest.mark.parametrize(
    ("declare", "field"),
    [
        (lambda: circuit(failures=-1, within=60), "failures"),
        (lambda: circuit(per_instance=True, reset_after="soon"), "reset_after"),
        (lambda: circuit(threaded=True, timeout=3), "timeout"),
        (lambda: circuit(max_size=3), "max_size"),
        (lambda: circuit(per_instance=1), "per_instance"),  # type: ignore[call-overload]
        (lambda: circuit(threaded="yes"), "threaded"),  # type: ignore[call-overload]
        (lambda: circuit(42), "name"),  # type: ignore[call-overload]
        (lambda: template(failurs=3), "failurs"),
        (lambda: template(max_size=0), "max_size"),
        (lambda: template(name="x"), "name"),
        (lambda: template(7), "prefix"),  # type: ignore[arg-type]
    ],
)
def test_invalid_options_raise_config_error_naming_the_field(declare: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        declare()
    assert info.value.field == field


def test_per_instance_refuses_a_shared_storage() -> None:
    storage = RedisStorage("redis://127.0.0.1:6379/0")  # never opened
    with pytest.raises(ConfigError, match="shared storage") as info:
        circuit(per_instance=True, storage=storage)
    assert info.value.field == "per_instance"

    class Client:  # a shared circuit is the same circuit in every process: fine
        breaker = circuit(storage=storage)

    assert Client.breaker.name == f"{HERE}.{Client.__qualname__}.breaker"


def test_slots_classes_without_weakref_are_refused_for_per_instance_circuits() -> None:
    with refused_at_class_creation(TypeError, r"Slotted\.breaker.*'__weakref__'"):

        class Slotted:
            __slots__ = ("host",)
            breaker = circuit(per_instance=True)


def test_slots_classes_with_weakref_or_shared_circuits_are_fine() -> None:
    class Weak:
        __slots__ = ("__weakref__", "host")
        breaker = circuit(per_instance=True)

    class Shared:
        __slots__ = ("host",)
        breaker = circuit()

    assert Weak().breaker is not Weak().breaker
    assert Shared().breaker is Shared.breaker


def test_a_declaration_names_one_attribute() -> None:
    declaration = circuit()
    with refused_at_class_creation(TypeError, "already declared as"):

        class Client:
            one = declaration
            two = declaration

    keyed = template()
    with refused_at_class_creation(TypeError, "already declared as"):

        class Other:
            one = keyed
            two = keyed


def test_an_undeclared_circuit_says_so() -> None:
    loose = circuit()
    loose_own = circuit(per_instance=True)
    loose_template = template()
    with pytest.raises(TypeError, match="not declared in a class body"):
        loose.__get__(None, object)
    with pytest.raises(TypeError, match="not declared in a class body"):
        loose_own.__get__(object(), object)
    with pytest.raises(TypeError, match="not declared in a class body"):
        loose_template.__get__(None, object)
    with pytest.raises(TypeError, match="not declared in a class body"):
        _ = loose.name
    with pytest.raises(TypeError, match="not declared in a class body"):
        _ = loose.owner
    with pytest.raises(TypeError, match="not declared in a class body"):
        _ = loose.attribute
    assert repr(loose) == "<Circuit '(undeclared)'>"
    assert repr(loose_template) == "<CircuitTemplate '(undeclared)'>"


# ---------------------------------------------------------------- circuits_of and runners


def test_circuits_of_a_class_and_of_an_instance() -> None:
    class Base:
        first = circuit()
        own = circuit(per_instance=True)
        sync = circuit(threaded=True)
        keyed = template()

    class Child(Base):
        second = circuit()
        sync_own = circuit(per_instance=True, threaded=True)
        more = template()

    assert circuits_of(Base) == [Base.first]
    assert circuits_of(Child) == [Child.first, Child.second]
    assert circuits_of(Child, threaded=True) == [Child.sync]
    child = Child()
    assert circuits_of(child) == [Child.first, child.own, Child.second]
    assert circuits_of(child, threaded=True) == [Child.sync, child.sync_own]
    assert templates_of(Child) == [Base.keyed, Child.more]
    assert templates_of(child) == templates_of(Child)
    assert circuits_of(object()) == []
    assert templates_of(int) == []


async def test_runners_start_with_running_circuits_of() -> None:
    opened = anyio.Event()
    seen: list[str] = []

    async def on_open(transition: Transition) -> None:  # async: run by the runner
        seen.append(transition.breaker)
        opened.set()

    class Client:
        shared = circuit(consecutive_failures=1, on_open=on_open)
        own = circuit(per_instance=True, consecutive_failures=1, on_open=on_open)

    client = Client()
    async with running(*circuits_of(client)):
        with pytest.raises(Boom):
            await client.own.call(fail)
        with anyio.fail_after(5):
            await opened.wait()
    assert seen == [client.own.name]


async def test_template_runners_start_with_templates_of() -> None:
    opened = anyio.Event()

    async def on_open(transition: Transition) -> None:
        opened.set()

    class Client:
        keyed = template(consecutive_failures=1, on_open=on_open)

    async with anyio.create_task_group() as tg:
        for registry in templates_of(Client):
            await tg.start(registry.run)
        with pytest.raises(Boom):
            await Client.keyed.get("host").call(fail)
        with anyio.fail_after(5):
            await opened.wait()
        tg.cancel_scope.cancel()
