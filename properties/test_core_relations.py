"""The relation graph of a group (``_core/relations.py``) against plain definitions.

* ``check_relations`` accepts exactly the graphs whose ``depends_on`` is acyclic and whose
  names are known, distinct and never the owner itself; what it returns is what was given.
* ``cascade_targets`` is the set reachable through ``cascades_to``, each once, without the
  source, in breadth-first order.
* ``is_held`` is "some direct dependency is neither CLOSED nor DISABLED (or is unknown)".
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from breaker_machines._core import (
    RECOVERY_ALLOWED,
    ConfigError,
    Relations,
    State,
    allows_recovery,
    cascade_targets,
    check_relations,
    is_held,
)

NAMES = [f"n{i}" for i in range(7)]


@st.composite
def graphs(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]], dict[str, list[str]]]:
    """Some names and two relations over them, each edge list without repeats or self."""
    count = draw(st.integers(min_value=1, max_value=len(NAMES)))
    names = NAMES[:count]
    depends: dict[str, list[str]] = {}
    cascades: dict[str, list[str]] = {}
    for name in names:
        others = [n for n in names if n != name]
        if others:
            depends[name] = draw(st.lists(st.sampled_from(others), unique=True, max_size=3))
            cascades[name] = draw(st.lists(st.sampled_from(others), unique=True, max_size=3))
    return names, depends, cascades


def _has_cycle(depends: dict[str, list[str]]) -> bool:
    """Plain definition: some name reaches itself through depends_on."""

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(depends.get(start, []))
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(depends.get(name, []))
        return seen

    return any(name in reach(name) for name in depends)


@given(graphs())
def test_check_relations_accepts_exactly_the_acyclic_graphs(
    graph: tuple[list[str], dict[str, list[str]], dict[str, list[str]]],
) -> None:
    names, depends, cascades = graph
    if _has_cycle(depends):
        with pytest.raises(ConfigError) as caught:
            check_relations(names, depends, cascades)
        assert caught.value.field == "depends_on"
        return
    relations = check_relations(names, depends, cascades)
    assert relations.depends_on == {a: tuple(d) for a, d in depends.items() if d}
    assert relations.cascades_to == {a: tuple(c) for a, c in cascades.items() if c}


@given(
    graphs(),
    st.sampled_from(["unknown", "self", "twice", "string", "not-a-name"]),
    st.sampled_from(["depends_on", "cascades_to"]),
)
def test_check_relations_names_the_bad_field(
    graph: tuple[list[str], dict[str, list[str]], dict[str, list[str]]], how: str, field: str
) -> None:
    names, depends, cascades = graph
    owner = names[0]
    spoilt: object = {
        "unknown": ["nobody"],
        "self": [owner],
        "twice": [owner, owner] if len(names) == 1 else [names[-1], names[-1]],
        "string": owner,
        "not-a-name": [3],
    }[how]
    relation = {"depends_on": dict(depends), "cascades_to": dict(cascades)}
    relation[field][owner] = spoilt  # type: ignore[assignment]
    with pytest.raises(ConfigError) as caught:
        check_relations(names, relation["depends_on"], relation["cascades_to"])
    assert caught.value.field == field


@given(graphs(), st.data())
def test_cascade_targets_are_the_reachable_names(
    graph: tuple[list[str], dict[str, list[str]], dict[str, list[str]]], data: st.DataObject
) -> None:
    names, _, cascades = graph
    relations = check_relations(names, {}, cascades)
    source = data.draw(st.sampled_from(names))
    targets = cascade_targets(relations, source)
    reachable: set[str] = set()
    todo = list(cascades.get(source, []))
    while todo:
        name = todo.pop()
        if name not in reachable:
            reachable.add(name)
            todo.extend(cascades.get(name, []))
    reachable.discard(source)
    assert len(targets) == len(set(targets))
    assert set(targets) == reachable
    # Breadth first: a target comes after some target (or the source) that cascades to it.
    for i, target in enumerate(targets):
        earlier = [source, *targets[:i]]
        assert any(target in cascades.get(name, []) for name in earlier)


@given(
    graphs(),
    st.data(),
    st.dictionaries(st.sampled_from(NAMES), st.sampled_from(State)),
)
def test_is_held_when_some_dependency_does_not_allow_recovery(
    graph: tuple[list[str], dict[str, list[str]], dict[str, list[str]]],
    data: st.DataObject,
    states: dict[str, State],
) -> None:
    names, depends, _ = graph
    # Keep only the dependencies on earlier names: always acyclic.
    acyclic = {
        a: [d for d in deps if names.index(d) < names.index(a)] for a, deps in depends.items()
    }
    relations = check_relations(names, acyclic, {})
    name = data.draw(st.sampled_from(names))
    expected = any(
        dep not in states or states[dep] not in (State.CLOSED, State.DISABLED)
        for dep in acyclic.get(name, [])
    )
    assert is_held(relations, name, states) is expected


def test_which_states_allow_recovery() -> None:
    assert {s for s in State if allows_recovery(s)} == {State.CLOSED, State.DISABLED}
    assert frozenset({State.CLOSED, State.DISABLED}) == RECOVERY_ALLOWED
    assert Relations().dependents_of("x") == ()
    relations = check_relations(["a", "b", "c"], {"b": ["a"], "c": ["a", "b"]}, {})
    assert relations.dependents_of("a") == ("b", "c")


def test_an_unknown_owner_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        check_relations(["a"], {"ghost": []}, {})
    assert (caught.value.field, caught.value.value) == ("name", "ghost")


@pytest.mark.parametrize(
    ("depends", "cascades", "message"),
    [
        ({"a": "b"}, {}, "depends_on='b': must be a list or tuple of breaker names"),
        ({}, {"a": {"b"}}, "cascades_to={'b'}: must be a list or tuple of breaker names"),
        ({"a": [1]}, {}, "depends_on=1: must be a breaker name (a string)"),
        ({"a": ["a"]}, {}, "depends_on='a': 'a' cannot relate to itself"),
        ({}, {"b": ["z"]}, "cascades_to='z': is not a breaker of this group"),
        ({"a": ["b", "b"]}, {}, "depends_on='b': is named twice"),
        ({"z": []}, {}, "name='z': is not a breaker of this group"),
        (
            {"a": ["b"], "b": ["c"], "c": ["b"]},
            {},
            "depends_on='b -> c -> b': is a cycle: its members could never recover",
        ),
    ],
)
def test_refusals_name_the_field_the_value_and_why(
    depends: dict[str, object], cascades: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_relations(["a", "b", "c"], depends, cascades)
    assert str(caught.value) == message


def test_a_diamond_is_not_a_cycle() -> None:
    relations = check_relations(["a", "b", "c", "d"], {"a": ["b", "c"], "b": ["d"], "c": ["d"]}, {})
    assert relations.depends_on["a"] == ("b", "c")
