"""The registry of built-in policies (names are a public contract)."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from kvmctx.policies.base import Policy

# name -> module under kvmctx.policies
_MODULES = {
    "upstream-6.14": "upstream_6_14",
    "arm64-4.17": "arm64_4_17",
}

_cache: dict[str, Policy] = {}


def names() -> list[str]:
    return list(_MODULES)


def get(name: str) -> Policy:
    """A built-in policy by name; KeyError if unknown."""
    if name not in _cache:
        if name not in _MODULES:
            raise KeyError(name)
        mod = importlib.import_module(f"kvmctx.policies.{_MODULES[name]}")
        _cache[name] = mod.POLICY
    return _cache[name]


def all_policies() -> list[Policy]:
    return [get(n) for n in names()]


class PolicyFileError(ValueError):
    pass


def load_file(path: str | Path) -> Policy:
    """Load a policy from a user's Python file that defines POLICY."""
    p = Path(path)
    if not p.is_file():
        raise PolicyFileError(f"{p}: no such policy file")
    spec = importlib.util.spec_from_file_location(f"kvmctx_user_policy_{abs(hash(str(p)))}", p)
    if spec is None or spec.loader is None:
        raise PolicyFileError(f"{p}: cannot load as a Python module")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # a user's file: report, do not crash
        raise PolicyFileError(f"{p}: error while loading: {type(e).__name__}: {e}") from None
    pol = getattr(mod, "POLICY", None)
    if not isinstance(pol, Policy):
        raise PolicyFileError(f"{p}: must define POLICY = Policy(...) (kvmctx.policies.base)")
    return pol
