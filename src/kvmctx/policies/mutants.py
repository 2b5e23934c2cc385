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


def _lazy_zcr(p: Policy) -> Policy:
    """Before 59419f10045b: only a VHE host (which runs under ZCR_EL2) sees the vCPU's
    maximum VL after an exit; an nVHE host keeps the guest's ZCR_EL1 until vcpu_put."""
    from kvmctx.policies.base import Step, replace_step

    def hyp_exit_zcr_lazy(m, s, k, t):
        v = m.vcpu_of[t]
        if m.config.vhe and m.vcpu_sve[v]:
            s[m.vl[k]] = m.ctx_vq[m.vctx[v]]

    return p.but(hyp_exit=replace_step(p.hyp_exit, "ZCR", Step(
        hyp_exit_zcr_lazy, "ZCR left as the guest programmed it (nVHE)",
        "arch/arm64/kvm/hyp/include/hyp/switch.h")))


register(Mutant(
    name="lazy-zcr-switch",
    base="upstream-6.14",
    source="59419f10045b",
    catalogue=22,
    invariant="no-bug",
    description="ZCR_EL1 is not switched back at exit: on nVHE the live VL is the guest's "
                "when a softirq saves the bound vCPU state at the vCPU's max VL: WARN, SIGKILL",
    transform=_lazy_zcr,
    bounds="kvm-sve-nvhe",
))


# Catalogue entries the model does not express, and why (kept in step with docs).
NOT_EXPRESSED: dict[int, str] = {}


def _load_more() -> None:
    """Mutant modules kept apart by area register themselves on import."""
    import importlib

    for mod in ("kvmctx.policies.mutants_host",):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def names() -> list[str]:
    _load_more()
    return list(_MUTANTS)


def get(name: str) -> Mutant:
    _load_more()
    return _MUTANTS[name]


def all_mutants() -> list[Mutant]:
    _load_more()
    return list(_MUTANTS.values())


def catalogue() -> list[Mutant]:
    _load_more()
    return sorted((m for m in _MUTANTS.values() if m.catalogue is not None),
                  key=lambda m: (m.catalogue, m.name))
