"""martin-rfc-2018: Dave Martin's RFC "KVM: arm64: Optime FPSIMD context handling".

Source: seed 000, patches 0.9/2 (fpsimd_foreign_fpstate,
fpsimd_bind_state_to_cpu), 1/2 (the lazy trap handler converted to C:
__hyp_switch_fpsimd) and 2/2 (host state saved only when live, guest state
bound to the CPU), on v4.16 with Christoffer Dall's vhe-optimize-v4 branch.

Differs from its neighbour arm64-4.17 (the code it replaces): hyp saves the
host's FPSIMD state only when it is live (TIF_FOREIGN_FPSTATE clear on the
VMM thread), into the VMM task's own thread struct rather than a per-CPU
host context, and never restores it on exit: the host reloads it lazily
(TIF_FOREIGN_FPSTATE is set after the guest ran). The guest state is still
saved at every exit that used FP ("This patch cannot eliminate the need to
save the guest context before enabling interrupts, because softirqs may use
kernel-mode NEON"), but it is also bound to the CPU, so the next run-loop
iteration re-enters without a trap if nobody used the registers meanwhile.
No host SVE (BUG_ON(system_supports_sve())); no vcpu_put hook.

Two forms: ``POLICY`` is the design as its author meant it (he fixed the
WARN to ``&&`` in reply to the review; fpsimd_thread_switch() tests next's
state, as the merged v4.18 code does). ``POSTED`` (martin-rfc-2018-posted)
is patch 0.9 as posted: ``WARN_ON(!in_softirq() || !irqs_disabled())`` in
__fpsimd_bind_to_cpu() ("You meant && here, right? Currently this makes my
box explode."), and fpsimd_thread_switch() asking whether *current's*
state is foreign where it means next's - a second slip the review did not
mention, which the checker finds on its own.
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.model import host as H
from kvmctx.model.values import TO_SAVE_FPSIMD
from kvmctx.policies.base import ALL_FEATURES, GAP_NONE, Policy, StateField, Step

ARM_C = "virt/kvm/arm/arm.c"
SWITCH_C = "arch/arm64/kvm/hyp/switch.c"


def run_loop_flags(m, s, k, t):
    """Run loop, IRQs off: tell hyp whether the host state is live and whether the
    guest state is still the one bound to this CPU."""
    v = m.vcpu_of[t]
    c = m.vctx[v]
    host_live = 0 if s[m.foreign[t]] else 1
    # !fpsimd_foreign_fpstate(guest): bound here, and its st->cpu names this CPU
    loaded = 1 if (s[m.bound[k]] == c and s[m.fcpu[c]] == k) else 0
    s[m.pf["host_state"][v]] = host_live
    s[m.pf["guest_loaded"][v]] = loaded
    if any(m.task_sve) or any(m.vcpu_sve):
        m.violate("no-bug", "BUG_ON(system_supports_sve()) in kvm_arch_vcpu_ioctl_run", k, (t,))
    if loaded and host_live:
        m.violate("no-bug", "BUG_ON(guest_fpsimd_loaded && host_fpsimd_state)", k, (t, c))


def activate_traps(m, s, k, t):
    """activate_traps: FP trapped unless the guest state is still loaded."""
    s[m.gtrap[k]] = 0 if s[m.pf["guest_loaded"][m.vcpu_of[t]]] else 1
    m.ctr[C.TRAP_WRITES] += 1


def hyp_switch_fpsimd(m, s, k, t, v, sve):
    """__hyp_switch_fpsimd: enable FP; save the host's live state; load the guest's."""
    s[m.gtrap[k]] = 0
    m.ctr[C.TRAP_WRITES] += 1
    m.ctr[C.ISBS] += 1
    if s[m.pf["host_state"][v]]:
        H.save_fpsimd_to(m, s, k, m.mem_lo[t], t)  # vcpu->arch.host_fpsimd_state
    H.load_state(m, s, k, m.vctx[v], False, 0)
    s[m.pf["guest_loaded"][v]] = 1


def hyp_exit_save_guest(m, s, k, t):
    """__kvm_vcpu_run: if fp_enabled, save the guest state (the host restore is gone)."""
    if not s[m.gtrap[k]]:
        c = m.vctx[m.vcpu_of[t]]
        H.save_fpsimd_to(m, s, k, m.mem_lo[c], c)


def bind_guest(m, s, k, t):
    """local_bh_disable(); local_irq_enable(); if (guest_fpsimd_loaded) { set
    TIF_FOREIGN_FPSTATE; fpsimd_bind_state_to_cpu(); fpsimd_save_state(guest); }"""
    v = m.vcpu_of[t]
    if s[m.pf["guest_loaded"][v]]:
        c = m.vctx[v]
        s[m.foreign[t]] = 1
        H.fpsimd_bind_state_to_cpu(m, s, k, c, TO_SAVE_FPSIMD, 1)
        H.save_fpsimd_to(m, s, k, m.mem_lo[c], c)


def _policy(name: str, warn: str, posted: bool) -> Policy:
    return Policy(
        name=name,
        source="seed 000: RFC PATCH 0.9/2, 1/2, 2/2 (Dave Martin, 2018-02-16)"
               + (", as posted" if posted else ", as meant"),
        summary="hyp saves the host state only if live and never restores it; the guest "
                "state is saved at every exit but stays bound to the CPU for a trap-free "
                "re-entry",
        differs="vs arm64-4.17: no per-CPU host context and no host restore on exit (lazy "
                "reload via TIF_FOREIGN_FPSTATE); guest state bound with "
                "fpsimd_bind_state_to_cpu; vs upstream-4.18: the guest is still saved at "
                "every exit" + ("; WARN as posted (||) and switch tests prev's state"
                                if posted else "; WARN as meant (&&)"),
        host=H.HOST_4_17.but(era="v4.16 + seed 000 patch 0.9", bind_warn=warn,
                             switch_tests_prev=posted, bind_sets_state_cpu=True),
        supports=ALL_FEATURES - {"sve", "guest-sve", "guest-vl", "sme", "fpmr"},
        vcpu_fields={"host_state": StateField(0), "guest_loaded": StateField(0)},
        ctxflush=(Step(run_loop_flags, "host_fpsimd_state = live?; guest_fpsimd_loaded = "
                                       "!fpsimd_foreign_fpstate(guest)", ARM_C),),
        guest_entry=(Step(activate_traps, "trap FP unless guest_fpsimd_loaded",
                          f"{SWITCH_C}: activate_traps"),),
        hyp_fp_trap=hyp_switch_fpsimd,
        hyp_exit=(Step(hyp_exit_save_guest, "if fp_enabled: save guest FPSIMD",
                       f"{SWITCH_C}: __kvm_vcpu_run"),),
        post_exit=(Step(bind_guest, "bh off, IRQs on: set FOREIGN, bind guest state, save it",
                        ARM_C, gap=GAP_NONE, irqs_off=False, bh_off=True),),
        options={"warn": warn, "posted": posted},
    )


POLICY = _policy("martin-rfc-2018", "&&", posted=False)
POSTED = _policy("martin-rfc-2018-posted", "||", posted=True)
