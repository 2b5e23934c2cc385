"""dall-tif-2018: Christoffer Dall's alternative, "Be more lazy with switching KVM
guest FPSIMD state" (seed 000, commit 6bb55488489d on his kvm-vfp-integration-rfc
branch, posted in reply to Martin's RFC on 2018-02-23).

The design: mark the VMM thread with TIF_KVM_GUEST_FPSTATE while the guest's
FPSIMD state is paged into the thread's own ``thread.fpsimd_state``, so the
host's ordinary machinery saves and reloads guest state as if it were the
task's; stash the real host state in the vCPU (``host_fpsimd_state``) and
copy it back when KVM_RUN returns to userspace. Hyp reads and writes the
task's TIF flags through a hyp mapping of the task struct.

Differs from its neighbour martin-rfc-2018: no save of the guest state at
KVM_RUN exit boundaries inside the loop beyond what hyp already does, no
binding of the vCPU state; the guest state rides on the VMM task's
TIF_FOREIGN_FPSTATE instead. Built on Martin's patch 0.9 as meant (&&) and
patch 1 (the C trap handler); v4.16 host (saves go to current's thread struct).

Flaws raised on the list, kept: the flag is never cleared ("How does that
flag get cleared? Should this be test_and_clear_thread_flag()?"), and the
save/restore pulled out of the IRQ-off region lets softirq kernel-mode NEON
trash the state ("pulling fpsimd save/restore outside the
local_irq_disable() region exposes us to softirqs that can trash the
state"). The checker finds a third: hyp clears TIF_FOREIGN_FPSTATE without
binding anything to the CPU, so a task whose stale binding still names
this CPU skips its reload after a context switch.
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.model import host as H
from kvmctx.model.layout import TAG_LO
from kvmctx.policies.base import ALL_FEATURES, GAP_NONE, Policy, StateField, Step

SWITCH_C = "arch/arm64/kvm/hyp/switch.c"
ARM_C = "virt/kvm/arm/arm.c"


def activate_traps(m, s, k, t):
    """Trap FP if !TIF_KVM_GUEST_FPSTATE || TIF_FOREIGN_FPSTATE (read through hyp_current)."""
    guest_fp = s[m.pf["kvm_guest_fpstate"][t]]
    s[m.gtrap[k]] = 1 if (not guest_fp or s[m.foreign[t]]) else 0
    m.ctr[C.TRAP_WRITES] += 1


def hyp_switch_fpsimd(m, s, k, t, v, sve):
    """__hyp_switch_fpsimd: first use this ioctl -> back up the host, load the guest;
    otherwise the guest state was paged into current's thread struct -> load that."""
    s[m.gtrap[k]] = 0
    m.ctr[C.TRAP_WRITES] += 1
    m.ctr[C.ISBS] += 1
    stash = m.pf["host_fpsimd_state"][v]
    if not s[m.pf["kvm_guest_fpstate"][t]]:
        if not s[m.foreign[t]]:
            H.save_fpsimd_to(m, s, k, stash, t)          # __fpsimd_save_state(host_fpsimd)
        else:
            s[stash] = s[m.mem_lo[t]]                    # memcpy(host_fpsimd, current_fpsimd)
        H.load_state(m, s, k, m.vctx[v], False, 0)       # __fpsimd_restore_state(guest_fpsimd)
    else:
        H.load_state(m, s, k, t, False, 0)               # __fpsimd_restore_state(current_fpsimd)
    s[m.foreign[t]] = 0
    s[m.pf["kvm_guest_fpstate"][t]] = 1


def hyp_exit_save_guest(m, s, k, t):
    """__kvm_vcpu_run (from Martin's patch 2, untouched): if fp_enabled, save the guest."""
    if not s[m.gtrap[k]]:
        c = m.vctx[m.vcpu_of[t]]
        H.save_fpsimd_to(m, s, k, m.mem_lo[c], c)


def copy_back(m, s, k, t):
    """KVM_RUN returning (local_bh_disable): guest state to the vCPU, host state back
    into the thread struct, TIF_FOREIGN_FPSTATE set. The flag is not cleared."""
    if not s[m.pf["kvm_guest_fpstate"][t]]:
        return
    v = m.vcpu_of[t]
    c = m.vctx[v]
    if not s[m.foreign[t]]:
        H.save_fpsimd_to(m, s, k, m.mem_lo[c], c)        # __fpsimd_save_state(guest_fpsimd)
    else:
        s[m.mem_lo[c]] = s[m.mem_lo[t]]                  # memcpy(guest, current_fpsimd)
    s[m.mem_lo[t]] = s[m.pf["host_fpsimd_state"][v]]     # memcpy(current_fpsimd, host_fpsimd)
    s[m.fp_type[t]] = 0
    s[m.foreign[t]] = 1


def aliases(m, s, c):
    """While TIF_KVM_GUEST_FPSTATE is set the guest state lives in the VMM task's
    thread struct and binding (the design's intent)."""
    for v in range(m.nvcpu):
        if m.vctx[v] == c:
            t = m.vthread[v]
            return (t,) if s[m.pf["kvm_guest_fpstate"][t]] else ()
    return ()


POLICY = Policy(
    name="dall-tif-2018",
    source="seed 000: Christoffer Dall, 2018-02-23, 6bb55488489d (on Martin's RFC 0.9/1)",
    summary="TIF_KVM_GUEST_FPSTATE on the VMM thread: guest state paged into the task's "
            "thread struct, host state stashed in the vCPU, copied back on KVM_RUN return",
    differs="vs martin-rfc-2018: no vCPU binding; the guest state rides on the VMM task's "
            "TIF_FOREIGN_FPSTATE and is copied out only when KVM_RUN returns (flaws kept: "
            "flag never cleared, copy outside the IRQ-off region)",
    host=H.HOST_4_17.but(era="v4.16 + seed 000 patch 0.9 (as meant)", bind_warn="&&",
                         bind_sets_state_cpu=True),
    supports=ALL_FEATURES - {"sve", "guest-sve", "guest-vl", "sme", "fpmr"},
    thread_fields={"kvm_guest_fpstate": StateField(0)},
    vcpu_fields={"host_fpsimd_state": StateField(0, TAG_LO, stash=True)},
    guest_entry=(Step(activate_traps, "trap FP if !TIF_KVM_GUEST_FPSTATE || TIF_FOREIGN",
                      f"{SWITCH_C}: activate_traps"),),
    hyp_fp_trap=hyp_switch_fpsimd,
    hyp_exit=(Step(hyp_exit_save_guest, "if fp_enabled: save guest FPSIMD",
                   f"{SWITCH_C}: __kvm_vcpu_run"),),
    run_exit=(Step(copy_back, "if TIF_KVM_GUEST_FPSTATE: guest -> vcpu, host stash -> "
                              "thread, set TIF_FOREIGN (flag left set)", ARM_C,
                   gap=GAP_NONE, bh_off=True),),
    aliases=aliases,
)
