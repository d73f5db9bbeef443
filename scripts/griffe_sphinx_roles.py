"""A griffe extension for the docs site: Sphinx roles in docstrings become cross-references.

The docstrings are plain prose with reST-ish markup (``double backticks``, ``text::``
before a literal block) and a few Sphinx roles (``:class:`Breaker```,
``:meth:`~breaker_machines.Breaker.run```), which read well in ``help()`` but would show up
verbatim on the site. This extension rewrites each role, at
load time and in the docs build only, into an mkdocs-autorefs cross-reference to the
object's API reference, or into plain code when the name cannot be resolved. The
cross-references are *optional*: a target the site does not render (a private module, a
page not written yet) becomes plain code instead of a broken link, so docstrings written
for ``help()`` never fail ``mkdocs build --strict``.

Configured in ``mkdocs.yml`` under ``plugins.mkdocstrings.handlers.python.options``:
``extensions: [scripts/griffe_sphinx_roles.py:SphinxRoles]``.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?P<role>class|meth|func|mod|attr|data|exc|obj|const|doc|ref)"
    r":`(?P<target>[^`]+)`"
)
_LITERAL = re.compile(r"(\S)::\n\n(?=[ \t]+\S)")
_EXPLICIT = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")


def _rewrite(text: str, obj: griffe.Object) -> str:
    def replace(match: re.Match[str]) -> str:
        role = match["role"]
        target = match["target"].strip()
        explicit = _EXPLICIT.match(target)
        title: str | None = None
        if explicit is not None:
            title, target = explicit["title"], explicit["target"]
        if role == "doc":
            return title or target  # a page of the Sphinx world: keep the words
        if role == "ref":  # a label: the heading of a docs page with that anchor id
            label = html.escape(title or target)
            return f'<autoref identifier="{html.escape(target)}" optional>{label}</autoref>'
        short = target.startswith("~")
        target = target.lstrip("~")
        if title is None:
            title = target.rsplit(".", 1)[-1] if short else target
        label = f"<code>{html.escape(title)}</code>"
        if target.startswith("."):  # a relative module, private: no page of its own
            return label
        identifier = _resolve(target, obj)
        if identifier is None:
            return label
        return f'<autoref identifier="{html.escape(identifier)}" optional>{label}</autoref>'

    return _ROLE.sub(replace, text)


def _resolve(target: str, obj: griffe.Object) -> str | None:
    if target.startswith("breaker_machines"):
        return target
    head, _, rest = target.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            resolved = scope.resolve(head)
        except Exception:  # griffe raises several kinds: any means "not here"
            scope = scope.parent
            continue
        return f"{resolved}.{rest}" if rest else resolved
    return None


def _walk(obj: griffe.Object, seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if obj.docstring is not None:
        text = obj.docstring.value
        if ":`" in text:
            text = _rewrite(text, obj)
        # reST's "text::" before an indented literal block: Markdown shows the block as
        # code already (indented four spaces); keep one colon.
        obj.docstring.value = _LITERAL.sub(r"\1:\n\n", text)
    for member in obj.members.values():
        if not member.is_alias:
            assert isinstance(member, griffe.Object)
            _walk(member, seen)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles once the whole package is loaded (so names resolve)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _walk(pkg, set())
