"""One home per rule (issue 19), read from the source with `ast`: the columns of
a user's MFA lifecycle are written by core/mfa_lifecycle.py alone, so `mfa
enable`/`reset`/`disable`/`unlock`, group policy, enrollment and the portal
cannot drift apart on what "require MFA with a period" means."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "pam_jctotp" / "core"
HOME = "mfa_lifecycle.py"
LIFECYCLE = {"mfa_required", "enroll_deadline", "enroll_now", "totp_secret", "enrolled_at"}


def lifecycle_writes(source: str) -> list[str]:
    """Lifecycle columns given to a `.update(...)` call: as keywords, or as keys of a
    dict in a function that calls `.update` (`changes = {...}; update(**changes)`)."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, (ast.FunctionDef, ast.Module)):
            continue
        calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Attribute) and n.func.attr == "update"]
        for call in calls:
            found += [k.arg for k in call.keywords if k.arg in LIFECYCLE]
        if calls:
            found += [k.value for n in ast.walk(fn) if isinstance(n, ast.Dict) for k in n.keys
                      if isinstance(k, ast.Constant) and k.value in LIFECYCLE]
    return sorted(set(found))


@pytest.mark.parametrize("path", sorted(p for p in CORE.glob("*.py") if p.name != HOME),
                         ids=lambda p: p.name)
def test_only_mfa_lifecycle_writes_the_lifecycle(path):
    assert lifecycle_writes(path.read_text()) == []


def test_the_checker_sees_both_spellings():
    assert lifecycle_writes("def f():\n    x = {'enroll_now': 1}\n"
                            "    store.update(n, mfa_required=1, **x)\n") == \
        ["enroll_now", "mfa_required"]
    assert lifecycle_writes("def shown(rec):\n    return {'mfa_required': 1}\n") == []
    assert lifecycle_writes((CORE / HOME).read_text())   # the home itself writes them
