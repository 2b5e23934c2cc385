"""Named mutants: a base policy with one historical bug put back.

Each entry of shared/reference/bug-catalogue.md that the model can express
has a mutant here; ``kvmctx check --catalogue`` checks them all and must
find every one. Entries the model cannot express are listed in
``NOT_EXPRESSED`` with the reason (docs/checker.md repeats them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvmctx import policies as P
from kvmctx.policies.base import Policy


@dataclass(frozen=True)
class Mutant:
    name: str
    base: str
    source: str            # upstream commit (12-hex) or "list, 2018"
    catalogue: int | None  # entry number in bug-catalogue.md
    invariant: str         # the invariant the bug breaks (expected)
    description: str
    transform: Callable[[Policy], Policy]
    bounds: str | None = None  # named bounds to check it at (default: standard)

    def build(self) -> Policy:
        base = P.get(self.base)
        pol = self.transform(base)
        return pol.but(name=f"{self.base}+{self.name}")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base, "source": self.source,
                "catalogue": self.catalogue, "invariant": self.invariant,
                "description": self.description, "bounds": self.bounds or "standard"}


_MUTANTS: dict[str, Mutant] = {}


def register(mu: Mutant) -> Mutant:
    if mu.name in _MUTANTS:
        raise ValueError(f"mutant {mu.name} registered twice")
    _MUTANTS[mu.name] = mu
    return mu


def _host(**flags: Any) -> Callable[[Policy], Policy]:
    def tf(p: Policy) -> Policy:
        return p.but(host=p.host.but(**flags))
    return tf


register(Mutant(
    name="flush-without-foreign",
    base="upstream-6.14",
    source="d8ad71fa38a9",
    catalogue=4,
    invariant="confidentiality",
    description="fpsimd_flush_cpu_state() drops the CPU binding but leaves current's "
                "TIF_FOREIGN_FPSTATE clear, so ret_to_user trusts registers nobody owns "
                "(kernel-mode NEON still sets the flag by hand, as v4.17 did)",
    transform=_host(flush_cpu_sets_foreign=False),
))


# Catalogue entries the model does not express, and why (kept in step with docs).
NOT_EXPRESSED: dict[int, str] = {}


def names() -> list[str]:
    return list(_MUTANTS)


def get(name: str) -> Mutant:
    return _MUTANTS[name]


def all_mutants() -> list[Mutant]:
    return list(_MUTANTS.values())


def catalogue() -> list[Mutant]:
    return sorted((m for m in _MUTANTS.values() if m.catalogue is not None),
                  key=lambda m: (m.catalogue, m.name))
