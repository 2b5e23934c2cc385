"""tang-eager-2018: Nianyao Tang's "arm64: KVM: reduce guest fpsimd trap" (seed 002).

Source: seed 002 (2018-05-16): a counter ``last_fpsimd_trap`` in the vCPU,
incremented by the hyp trap handler; when it is non-zero the next entry
saves the host FPSIMD registers and restores the guest's eagerly, with the
FP trap off, and resets it. Base: arm64-4.17 (the code the patch was
written against).

Differs from its neighbour arm64-4.17: one eager guest restore, keyed on
"the guest trapped FP last time", replaces the lazy trap at the next
entry. It is a predictor with no accuracy data ("Do you have any benchmarks
or metrics on the accuracy of the prediction?", Dave Martin; 29% of exits
touch FP, Christoffer Dall).

Where the eager restore runs is the whole question:

* ``POLICY`` (tang-eager-2018) places it where the project's reference
  design (protocol.md, bug-catalogue.md entry 23) and Marc Zyngier's
  objection put it - when the vCPU is loaded, including from the
  preempt notifier's sched-in ("I can't see how this works when being
  preempted"). The guest's values then sit in the registers while the host
  kernel, preemptible and taking softirqs, still believes they are the host
  task's (its binding and TIF_FOREIGN_FPSTATE are not updated).
* ``HYP_ENTRY`` (tang-eager-2018-hyp) is the hunk as literally posted: in
  the hyp run function, after __activate_traps, with IRQs masked, undone
  by the v4.17 exit path before the host runs again.

The counter is modelled as a flag: its value beyond non-zero is never read
(the review's "Can this overflow?" is about C integer overflow).
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.model import host as H
from kvmctx.model.layout import TAG_LO
from kvmctx.policies.arm64_4_17 import fpsimd_flush_sve, hyp_exit_switch_back
from kvmctx.policies.base import ALL_FEATURES, Policy, StateField, Step

SWITCH_C = "arch/arm64/kvm/hyp/switch.c"


def eager_restore(m, s, k, t, v):
    """if (vcpu->last_fpsimd_trap) { __fpsimd_save_state(host); __fpsimd_restore_state
    (guest); vcpu->last_fpsimd_trap = 0; }"""
    f = m.pf
    if s[f["last_fpsimd_trap"][v]]:
        H.save_fpsimd_to(m, s, k, f["host_fpsimd"][k], t)
        H.load_state(m, s, k, m.vctx[v], False, 0)
        s[f["last_fpsimd_trap"][v]] = 0
        s[f["eager"][v]] = 1
        m.ctr[C.EAGER_RESTORES] += 1


def load_eager(m, s, k, t):
    """vcpu_load: restore the guest FPSIMD state now if it trapped last time (and
    remember, for the next entry, whether this load did so)."""
    v = m.vcpu_of[t]
    s[m.pf["eager"][v]] = 0
    eager_restore(m, s, k, t, v)


def activate_traps_load(m, s, k, t):
    """__activate_traps: FP untrapped for the entry right after an eager restore."""
    v = m.vcpu_of[t]
    s[m.gtrap[k]] = 0 if s[m.pf["eager"][v]] else 1
    s[m.pf["eager"][v]] = 0
    if m.config.vhe:
        s[m.zen[k]] = 0
    m.ctr[C.TRAP_WRITES] += 1


def activate_traps_hyp(m, s, k, t):
    """__activate_traps (as posted): FPEN/TFP from last_fpsimd_trap; then, in the run
    function, the eager save/restore itself."""
    v = m.vcpu_of[t]
    s[m.gtrap[k]] = 0 if s[m.pf["last_fpsimd_trap"][v]] else 1
    if m.config.vhe:
        s[m.zen[k]] = 0
    m.ctr[C.TRAP_WRITES] += 1
    eager_restore(m, s, k, t, v)
    s[m.pf["eager"][v]] = 0


def fpsimd_guest_restore(m, s, k, t, v, sve):
    """__fpsimd_guest_restore + "Mark guest using fpsimd now": last_fpsimd_trap++."""
    s[m.gtrap[k]] = 0
    m.ctr[C.TRAP_WRITES] += 1
    m.ctr[C.ISBS] += 1
    H.save_fpsimd_to(m, s, k, m.pf["host_fpsimd"][k], t)
    H.load_state(m, s, k, m.vctx[v], False, 0)
    s[m.pf["last_fpsimd_trap"][v]] = 1


def _policy(name: str, hyp: bool) -> Policy:
    common = dict(
        source="seed 002: [PATCH] arm64: KVM: reduce guest fpsimd trap (Nianyao Tang, 2018)"
               + (", hunk as posted (hyp run function)" if hyp else
                  ", eager restore at vcpu_load (protocol.md, bug-catalogue.md #23)"),
        summary="arm64-4.17 plus an eager guest FPSIMD restore when the vCPU trapped FP "
                "last time (last_fpsimd_trap)",
        differs="vs arm64-4.17: one eager restore keyed on the previous trap replaces the "
                "lazy trap" + (" (inside hyp, IRQs masked)" if hyp else
                               " (at vcpu_load, also from the sched-in notifier)"),
        host=H.HOST_4_17,
        supports=ALL_FEATURES - {"guest-sve", "guest-vl", "sme", "fpmr"},
        cpu_fields={"host_fpsimd": StateField(0, TAG_LO, stash=True)},
        vcpu_fields={"last_fpsimd_trap": StateField(0), "eager": StateField(0)},
        hyp_fp_trap=fpsimd_guest_restore,
        hyp_exit=(
            Step(hyp_exit_switch_back, "if FP enabled: save guest, restore host FPSIMD",
                 f"{SWITCH_C}: __kvm_vcpu_run"),
            Step(fpsimd_flush_sve, "sve_flush_cpu_state()", "virt/kvm/arm/arm.c"),
        ),
    )
    if hyp:
        return Policy(name=name, guest_entry=(Step(
            activate_traps_hyp, "trap FP unless last_fpsimd_trap; if set: save host, "
            "restore guest, last_fpsimd_trap = 0", f"{SWITCH_C}: kvm_vcpu_run_vhe"),),
            **common)  # type: ignore[arg-type]
    return Policy(
        name=name,
        vcpu_load=(Step(load_eager, "if last_fpsimd_trap: save host regs, restore guest "
                                    "FPSIMD, last_fpsimd_trap = 0", "kvm_arch_vcpu_load"),),
        guest_entry=(Step(activate_traps_load, "trap FP unless restored eagerly",
                          f"{SWITCH_C}: __activate_traps"),),
        **common)  # type: ignore[arg-type]


POLICY = _policy("tang-eager-2018", hyp=False)
HYP_ENTRY = _policy("tang-eager-2018-hyp", hyp=True)
