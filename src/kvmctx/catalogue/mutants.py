"""Named mutants: a base policy with one historical bug put back.

Each entry of the bug catalogue that the model can express has a mutant
here or in the area modules beside it; ``kvmctx check --catalogue`` checks
them all and must find every one. Entries the model cannot express are listed in
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


def load_all() -> None:
    """Mutant modules kept apart by area register themselves on import."""
    import importlib

    for area in ("host", "vcpu", "windows", "regs", "signals", "life"):
        importlib.import_module(f"kvmctx.catalogue.{area}")


def names() -> list[str]:
    load_all()
    return list(_MUTANTS)


def get(name: str) -> Mutant:
    load_all()
    return _MUTANTS[name]


def all_mutants() -> list[Mutant]:
    load_all()
    return list(_MUTANTS.values())


def catalogue() -> list[Mutant]:
    load_all()
    return sorted((m for m in _MUTANTS.values() if m.catalogue is not None),
                  key=lambda m: (m.catalogue, m.name))


# ------------------------------------------------------------------ KVM (17-20)


def _put_with_bh_masking(p: Policy) -> Policy:
    """Before b045e4d0f392: vcpu_put brackets the save with local_bh_disable/enable,
    which warns when the preempt notifier calls it with IRQs disabled."""
    from kvmctx.policies.base import Step

    inner = p.vcpu_put[0].fn

    def put_fp_bh(m, s, k, t):
        inner(m, s, k, t)
        if m.irqs_off:
            m.violate("no-bug", "kvm_arch_vcpu_put_fp(): local_bh_enable() with IRQs disabled "
                      "(WARN_ON_ONCE in __local_bh_enable_ip) from the sched-out notifier",
                      k, (t,))

    return p.but(vcpu_put=(Step(put_fp_bh, "local_bh_disable(); save + flush; "
                                           "local_bh_enable()", p.vcpu_put[0].where),))


register(Mutant(
    name="put-masks-softirqs",
    base="upstream-4.18",
    source="b045e4d0f392",
    catalogue=17,
    invariant="no-bug",
    description="vcpu_put masks softirqs (local_bh_disable/enable) instead of IRQs; the "
                "sched-out preempt notifier calls it with IRQs disabled: WARN",
    transform=_put_with_bh_masking,
))


def _no_zen_restore(p: Policy) -> Policy:
    """Before b3eb56b629d1: vcpu_put does not restore the EL0 SVE trap hyp clobbered."""
    from kvmctx.policies import upstream_4_18 as U
    from kvmctx.policies.base import Step

    def put_fp_old(m, s, k, t):
        v = m.vcpu_of[t]
        if s[m.pf["fp_enabled"][v]]:
            U.H.fpsimd_save_user_state(m, s, k)
            U.H.fpsimd_flush_cpu_state(m, s, k)
        s[m.tif_sve[t]] = s[m.pf["host_sve_in_use"][v]]

    return p.but(vcpu_put=(Step(put_fp_old, "if FP_ENABLED: save + flush; TIF_SVE back "
                                            "(EL0 SVE trap left as hyp set it)",
                                p.vcpu_put[0].where),))


register(Mutant(
    name="sve-trap-not-restored",
    base="upstream-4.18",
    source="b3eb56b629d1",
    catalogue=18,
    invariant="no-bug",
    description="hyp clears CPACR_EL1.ZEN (shared with host EL0 under VHE) and vcpu_put does "
                "not restore it: a task whose SVE state is still bound here traps with "
                "TIF_SVE set ('SVE access shouldn't have trapped')",
    transform=_no_zen_restore,
))


def _ctxsync_keeps_tif_sve(p: Policy) -> Policy:
    """Before 2955bcc8c309: ctxsync leaves TIF_SVE set while the vCPU state is bound,
    so the host saves the guest registers in SVE form into the VMM task's buffer. The
    host keeps TIF_SVE across syscalls (as from v6.2) so the flag can be set here."""
    from kvmctx.model import host as H
    from kvmctx.policies import upstream_4_18 as U
    from kvmctx.policies.base import Step

    def ctxsync_old(m, s, k, t):
        v = m.vcpu_of[t]
        if s[m.pf["fp_enabled"][v]]:
            c = m.vctx[v]
            H.fpsimd_bind_state_to_cpu(m, s, k, c, 0, m.ctx_vq[c])
            s[m.foreign[t]] = 0

    return p.but(host=p.host.but(syscall_sve=H.SYSCALL_KEEP),
                 ctxsync=(Step(ctxsync_old, "bind vcpu state, clear TIF_FOREIGN (TIF_SVE kept)",
                               U.KVM_FPSIMD),))


def _keep_syscall(p: Policy) -> Policy:
    from kvmctx.model import host as H

    return p.but(host=p.host.but(syscall_sve=H.SYSCALL_KEEP))


register(Mutant(
    name="ctxsync-keeps-tif-sve",
    base="upstream-4.18",
    source="2955bcc8c309",
    catalogue=19,
    invariant="recoverability",
    description="with TIF_SVE still set while the vCPU's FPSIMD state is bound, a save picks "
                "SVE form from current's flag and writes the guest registers into the VMM "
                "task's SVE buffer",
    transform=_ctxsync_keeps_tif_sve,
    bounds="kvm-vmm-sve",
))


def _host_sve_enabled_sticky(p: Policy) -> Policy:
    """Before d52d165d67c5: load_fp only ever sets HOST_SVE_ENABLED."""
    from kvmctx.policies import brown_sve_2022 as B
    from kvmctx.policies.base import Step

    def load_fp_sticky(m, s, k, t):
        v = m.vcpu_of[t]
        keep = s[m.pf["host_sve_enabled"][v]]
        B.load_fp(m, s, k, t)
        s[m.pf["host_sve_enabled"][v]] |= keep

    return p.but(vcpu_load=(Step(load_fp_sticky, "fpsimd_kvm_prepare(); HOST_OWNED; "
                                                 "HOST_SVE_ENABLED only ever set",
                                 p.vcpu_load[0].where),))


register(Mutant(
    name="host-sve-enabled-sticky",
    base="brown-sve-2022",
    source="d52d165d67c5",
    catalogue=20,
    invariant="integrity",
    description="HOST_SVE_ENABLED is set at vcpu_load when EL0 SVE is enabled but never "
                "cleared, so a later vcpu_put re-enables EL0 SVE for a task that no longer "
                "has TIF_SVE: its SVE use is not tracked",
    transform=_host_sve_enabled_sticky,
))


# ------------------------------------------------------- list designs (23-25)


def _design(name: str) -> Callable[[Policy], Policy]:
    def tf(_p: Policy) -> Policy:
        return P.get(name)
    return tf


register(Mutant(
    name="eager-restore-keyed-on-last-trap",
    base="arm64-4.17",
    source="list, 2018 (seed 002)",
    catalogue=23,
    invariant="confidentiality",
    description="Tang's eager guest restore at vcpu_load when the vCPU trapped FP last "
                "time: guest values loaded over a preempted task's live state",
    transform=_design("tang-eager-2018"),
))

register(Mutant(
    name="tif-kvm-guest-fpstate",
    base="martin-rfc-2018",
    source="list, 2018 (seed 000)",
    catalogue=24,
    invariant="confidentiality",
    description="Dall's TIF_KVM_GUEST_FPSTATE: guest state paged into the VMM task's thread "
                "struct, flag never cleared, copy-back outside the IRQ-off region",
    transform=_design("dall-tif-2018"),
))


def _warn_or(p: Policy) -> Policy:
    return p.but(host=p.host.but(bind_warn="||"))


register(Mutant(
    name="bind-warn-or",
    base="martin-rfc-2018",
    source="list, 2018 (seed 000, patch 0.9)",
    catalogue=25,
    invariant="no-bug",
    description="WARN_ON(!in_softirq() || !irqs_disabled()) where && was meant: fires on "
                "every binding made with softirqs masked and IRQs on",
    transform=_warn_or,
))
