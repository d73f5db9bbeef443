"""The mutation score of ``_core`` after ``mutmut run``, checked against docs/verification.md.

Reads ``mutmut results --all true`` (one line per mutant: its name and status) and prints the
counts by status and the score: detected / all run, where a mutant is detected when a test
failed on it ("killed") or it made the tests hang ("timeout"). Mutants with no test reaching
them count as survivors. Every mutant that was not detected must
be listed in docs/verification.md (a line starting with ``- `<mutant name>` ``, in the
section "Surviving mutants", with the reason it is equivalent or cannot be killed); the
script exits 1 when one is not, or when a listed mutant no longer survives (the list must
stay true). ``--write`` prints the undocumented survivors as list lines to paste.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "verification.md"
GOAL = 95.0

_LINE = re.compile(r"^\s*(?P<name>\S+): (?P<status>[a-z ]+?)\s*$")
_LISTED = re.compile(r"^- `(?P<name>[^`]+)`", re.MULTILINE)


def results() -> dict[str, str]:
    done = subprocess.run(
        ["mutmut", "results", "--all", "true"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    found: dict[str, str] = {}
    for line in done.stdout.splitlines():
        match = _LINE.match(line)
        if match:
            found[match["name"]] = match["status"]
    return found


def main() -> int:
    statuses = results()
    if not statuses:
        print("no mutation results: run `mutmut run` first")
        return 1
    counts = Counter(statuses.values())
    detected = counts["killed"] + counts["timeout"]
    unchecked = counts["not checked"] + counts["skipped"]
    judged = len(statuses) - unchecked
    score = 100.0 * detected / judged if judged else 0.0
    print(f"{len(statuses)} mutants: " + ", ".join(f"{n} {s}" for s, n in counts.most_common()))
    print(f"score: {detected}/{judged} detected = {score:.1f}% (goal {GOAL:.0f}%)")
    alive = sorted(
        name
        for name, status in statuses.items()
        if status not in ("killed", "timeout", "not checked", "skipped")
    )
    listed = set(_LISTED.findall(DOC.read_text(encoding="utf-8"))) if DOC.exists() else set()
    undocumented = [name for name in alive if name not in listed]
    stale = sorted(name for name in listed if statuses.get(name) in ("killed", "timeout"))
    if "--write" in sys.argv:
        for name in undocumented:
            print(f"- `{name}` ({statuses[name]}): ")
        return 0
    for name in undocumented:
        print(f"not killed and not in docs/verification.md: {name} ({statuses[name]})")
    for name in stale:
        print(f"listed in docs/verification.md but killed now: {name}")
    if unchecked:
        print(f"{unchecked} mutants were not run: run `mutmut run` to the end")
    return 1 if undocumented or stale or unchecked else 0


if __name__ == "__main__":
    sys.exit(main())
