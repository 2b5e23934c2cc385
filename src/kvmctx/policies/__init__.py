"""The registry of built-in policies (names are a public contract)."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from kvmctx.policies.base import Policy

# name -> module under kvmctx.policies
_MODULES = {
    "arm32-vfp-2012": "arm32_vfp_2012",
    "arm64-4.17": "arm64_4_17",
    "martin-rfc-2018": "martin_rfc_2018",
    "dall-tif-2018": "dall_tif_2018",
    "tang-eager-2018": "tang_eager_2018",
    "upstream-4.18": "upstream_4_18",
    "brown-sve-2022": "brown_sve_2022",
    "upstream-6.14": "upstream_6_14",
    "pkvm": "pkvm",
}
# Variants offered next to a design that was fixed during review: name -> (module, attr).
_VARIANTS = {
    "martin-rfc-2018-posted": ("martin_rfc_2018", "POSTED"),
    "tang-eager-2018-hyp": ("tang_eager_2018", "HYP_ENTRY"),
    "brown-sve-2022-discard": ("brown_sve_2022", "DISCARD_SYSCTL"),
    "eager-last-trap": ("eager_predict", "LAST_TRAP_POLICY"),
    "eager-counter": ("eager_predict", "COUNTER_POLICY"),
    "eager-ewma": ("eager_predict", "EWMA_POLICY"),
    "eager-perfect": ("eager_predict", "PERFECT_POLICY"),
}

_cache: dict[str, Policy] = {}


def names(variants: bool = True) -> list[str]:
    """Policy names: the nine designs, then the variants."""
    return list(_MODULES) + (list(_VARIANTS) if variants else [])


def get(name: str) -> Policy:
    """A built-in policy by name; KeyError if unknown."""
    if name not in _cache:
        if name in _MODULES:
            mod = importlib.import_module(f"kvmctx.policies.{_MODULES[name]}")
            _cache[name] = mod.POLICY
        elif name in _VARIANTS:
            modname, attr = _VARIANTS[name]
            mod = importlib.import_module(f"kvmctx.policies.{modname}")
            _cache[name] = getattr(mod, attr)
        else:
            raise KeyError(name)
    return _cache[name]


def all_policies() -> list[Policy]:
    return [get(n) for n in names()]


class PolicyFileError(ValueError):
    pass


def load_file(path: str | Path) -> Policy:
    """Load a policy from a user's Python file that defines POLICY."""
    p = Path(path)
    try:
        is_file = p.is_file()
    except (OSError, ValueError) as e:   # a name too long for the file system...
        raise PolicyFileError(f"{str(p)[:80]}: cannot read: {e.strerror or e}") from None
    if not is_file:
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
