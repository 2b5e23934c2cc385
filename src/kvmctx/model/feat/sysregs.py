"""sysregs: deferred EL1/EL0 system registers (seed 001, Christoffer Dall, 2018).

Source: seed 001, "[PATCH v4 28/40] KVM: arm64: Defer saving/restoring
64-bit sysregs to vcpu load/put on VHE" (arch/arm64/kvm/hyp/sysreg-sr.c
kvm_vcpu_load_sysregs / kvm_vcpu_put_sysregs; arch/arm64/kvm/sys_regs.c
vcpu_read_sys_reg / vcpu_write_sys_reg).

Three modes (``ModelConfig.sysregs``, ``--sysregs``), orthogonal to the FP
policy:

* ``eager``: every entry saves the host's EL0 registers (TPIDR_EL0,
  TPIDRRO_EL0) and loads the guest's EL1 and EL0 registers; every exit saves
  the guest's and restores the host's. (nVHE is always eager: the host kernel
  runs at EL1 and needs its own EL1 registers.)
* ``deferred`` (VHE): the guest's EL1 + EL0 registers are loaded in
  vcpu_load and saved in vcpu_put (the host kernel at EL2 does not use
  them), the host's EL0 registers saved/restored around that. MDSCR_EL1 and
  SP_EL0 are still switched at every entry/exit (the host uses them; they
  are counted, not tracked). While the guest's values are live
  (``sysregs_loaded_on_cpu``) the emulation must use the hardware register:
  ``vcpu_read_sys_reg``/``vcpu_write_sys_reg`` do.
* ``deferred-stale``: the accessor reads and writes the vCPU's memory copy
  even while the registers are loaded - the stale read / lost write the
  accessors exist to prevent.

VMPIDR_EL2 stays immediate (written in memory and hardware; other vCPUs'
GIC emulation reads it), so it has no deferred state to model.

Events: the guest writes its EL1 (or EL0) registers; a trapped sysreg access
(SYS64 exit handled in the kernel) is emulated through the accessors (read
or write) while IRQs are on after the exit; a host task sets TPIDR_EL0 (TLS)
at EL0. The host's own context switch saves and loads TPIDR_EL0
(tls_thread_switch) after the preempt notifiers have run vcpu_put.
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.model.features import ActionSpec, Feature, register
from kvmctx.model.flow import EXIT_KERNEL, K_GUEST, K_USER
from kvmctx.model.policy import Step
from kvmctx.model.values import OWNER_BITS

TAG_SR1 = "tag_sr1"
TAG_SR0 = "tag_sr0"
GSR_WRITE = 25    # guest writes its EL1 (arg 0) or EL0 TPIDR (arg 1) registers
SR_EMULATE = 26   # run loop emulates a trapped access: read (arg 0) or write (arg 1)
HOST_TLS = 27     # a host task at EL0 sets TPIDR_EL0

EL1_SET = 18      # deferred EL1 registers (the seed's list minus TPIDR_EL0/TPIDRRO_EL0)
EL0_SET = 2       # TPIDR_EL0, TPIDRRO_EL0
COMMON = 2        # MDSCR_EL1, SP_EL0: switched on every entry and exit

SYSREG_SR_C = "arch/arm64/kvm/hyp/sysreg-sr.c"


def _deferred(m) -> bool:
    return m.config.sysregs != "eager" and m.config.vhe


def _new_tag(m, s, c: int) -> int:
    v = s[m.ver[c]] + 1
    s[m.ver[c]] = v
    return (v << OWNER_BITS) | c


# ---------------------------------------------------------------- switching


def _save_host_user(m, s, k):
    s[m.host_sr0[k]] = s[m.sr0[k]]
    m.ctr[C.SYSREG_SAVES] += EL0_SET


def _restore_host_user(m, s, k):
    s[m.sr0[k]] = s[m.host_sr0[k]]
    m.ctr[C.SYSREG_RESTORES] += EL0_SET


def _restore_guest(m, s, k, c):
    s[m.sr1[k]] = s[m.msr1[c]]
    s[m.sr0[k]] = s[m.msr0[c]]
    m.ctr[C.SYSREG_RESTORES] += EL1_SET + EL0_SET


def _save_guest(m, s, k, c):
    s[m.msr1[c]] = s[m.sr1[k]]
    s[m.msr0[c]] = s[m.sr0[k]]
    m.ctr[C.SYSREG_SAVES] += EL1_SET + EL0_SET


def load_sysregs(m, s, k, t):
    """kvm_vcpu_load_sysregs (VHE): host EL0 saved, guest EL0 + EL1 loaded."""
    if not _deferred(m):
        return
    v = m.vcpu_of[t]
    _save_host_user(m, s, k)
    _restore_guest(m, s, k, m.vctx[v])
    s[m.sr_loaded[v]] = 1


def put_sysregs(m, s, k, t):
    """kvm_vcpu_put_sysregs (VHE): guest EL1 + EL0 saved, host EL0 restored."""
    if not _deferred(m):
        return
    v = m.vcpu_of[t]
    if not s[m.sr_loaded[v]]:
        return
    _save_guest(m, s, k, m.vctx[v])
    _restore_host_user(m, s, k)
    s[m.sr_loaded[v]] = 0


def entry_sysregs(m, s, k, t):
    """sysreg_save_host_state / sysreg_restore_guest_state at every entry."""
    m.ctr[C.SYSREG_SAVES] += COMMON
    m.ctr[C.SYSREG_RESTORES] += COMMON
    if _deferred(m):
        return
    _save_host_user(m, s, k)
    _restore_guest(m, s, k, m.vctx[m.vcpu_of[t]])


def exit_sysregs(m, s, k, t):
    """sysreg_save_guest_state / sysreg_restore_host_state at every exit."""
    m.ctr[C.SYSREG_SAVES] += COMMON
    m.ctr[C.SYSREG_RESTORES] += COMMON
    if _deferred(m):
        return
    _save_guest(m, s, k, m.vctx[m.vcpu_of[t]])
    _restore_host_user(m, s, k)


def _steps(m) -> dict[str, tuple[Step, ...]]:
    return {
        "vcpu_load": (Step(load_sysregs, "kvm_vcpu_load_sysregs(): guest EL1/EL0 loaded",
                           f"{SYSREG_SR_C}: kvm_vcpu_load_sysregs"),),
        "vcpu_put": (Step(put_sysregs, "kvm_vcpu_put_sysregs(): guest EL1/EL0 saved",
                          f"{SYSREG_SR_C}: kvm_vcpu_put_sysregs"),),
        "guest_entry": (Step(entry_sysregs, "sysregs: host saved, guest restored",
                             f"{SYSREG_SR_C}: sysreg_restore_guest_state_vhe"),),
        "hyp_exit": (Step(exit_sysregs, "sysregs: guest saved, host restored",
                          f"{SYSREG_SR_C}: sysreg_save_guest_state_vhe"),),
    }


def tls_thread_switch(m, s, k, prev, nxt):
    """__switch_to -> tls_thread_switch: save prev's TPIDR_EL0, load next's."""
    if prev:
        s[m.msr0[prev]] = s[m.sr0[k]]
    if nxt:
        s[m.sr0[k]] = s[m.msr0[nxt]]


# ---------------------------------------------------------------- events


def _enabled(m, s, k, t, pc, kind, out) -> None:
    if kind == K_GUEST:
        out.append((GSR_WRITE, k, 0))
        out.append((GSR_WRITE, k, 1))
    elif kind == K_USER:
        out.append((HOST_TLS, k, 0))
    elif pc == m.L_POST and s[m.exitcls[m.vcpu_of[t]]] == EXIT_KERNEL:
        out.append((SR_EMULATE, k, 0))
        out.append((SR_EMULATE, k, 1))


def _guest_write(m, s, a) -> None:
    k, which = a[1], a[2]
    t = s[m.cur[k]]
    c = m.vctx[m.vcpu_of[t]]
    tg = _new_tag(m, s, c)
    if which == 0:
        s[m.sr1[k]] = tg
        s[m.want_sr1[c]] = tg
    else:
        s[m.sr0[k]] = tg
        s[m.want_sr0[c]] = tg


def _host_tls(m, s, a) -> None:
    k = a[1]
    t = s[m.cur[k]]
    tg = _new_tag(m, s, t)
    s[m.sr0[k]] = tg
    s[m.want_sr0[t]] = tg


def _emulate(m, s, a) -> None:
    """access_vm_reg(): vcpu_read_sys_reg / vcpu_write_sys_reg on a trapped access."""
    k, write = a[1], a[2]
    t = s[m.cur[k]]
    v = m.vcpu_of[t]
    c = m.vctx[v]
    m.ctr[C.SYSREG_TRAPS] += 1
    live = bool(s[m.sr_loaded[v]]) and m.config.sysregs != "deferred-stale"
    slot = m.sr1[k] if live else m.msr1[c]
    if write:
        tg = _new_tag(m, s, c)
        s[slot] = tg
        s[m.want_sr1[c]] = tg
    else:
        got = s[slot]
        if got != s[m.want_sr1[c]]:
            where = "the hardware register" if live else "the vCPU's memory copy"
            m.violate("integrity", f"emulated read of {m.name(c)}'s EL1 sysreg returns "
                      f"{m.tagname(got)} from {where}, not its latest "
                      f"{m.tagname(s[m.want_sr1[c]])} (stale read)", k, (c,))


def _check_cpu(m, s, k) -> None:
    t = s[m.cur[k]]
    if not t:
        return
    kind = m.p_kind[s[m.pc[t]]]
    if kind == K_USER:
        if s[m.sr0[k]] != s[m.want_sr0[t]]:
            m.violate("integrity", f"{m.tname(t)} on CPU{k} reads TPIDR_EL0 = "
                      f"{m.tagname(s[m.sr0[k]])}, not its own {m.tagname(s[m.want_sr0[t]])}",
                      k, (t,))
    elif kind == K_GUEST:
        c = m.vctx[m.vcpu_of[t]]
        for reg, hw, want in (("EL1 sysregs", m.sr1[k], m.want_sr1[c]),
                              ("TPIDR_EL0", m.sr0[k], m.want_sr0[c])):
            if s[hw] != s[want]:
                m.violate("integrity", f"{m.name(c)} on CPU{k} reads its {reg} = "
                          f"{m.tagname(s[hw])}, not its latest {m.tagname(s[want])} "
                          "(lost write)", k, (c,))
                return


def _init(m, s) -> None:
    for c in range(1, m.nctx):
        if c == m.sirq_ctx:
            continue
        t0 = (1 << OWNER_BITS) | c
        s[m.msr1[c]] = t0
        s[m.msr0[c]] = t0
        s[m.want_sr1[c]] = t0
        s[m.want_sr0[c]] = t0


def _text(m, s, a) -> str:
    kind, k, arg = a
    t = s[m.cur[k]]
    if kind == HOST_TLS:
        return f"{m.tname(t)}: sets TPIDR_EL0 (TLS) at EL0"
    c = m.name(m.vctx[m.vcpu_of[t]])
    if kind == GSR_WRITE:
        return f"{c}: guest writes its {'TPIDR_EL0' if arg else 'EL1 sysregs (e.g. TTBR0_EL1)'}"
    return f"{m.tname(t)}: emulates a trapped sysreg {'write' if arg else 'read'} for {c}"


register(Feature(
    name="sysregs",
    fields=(
        ("sr1", "cpu.sysregs.el1", "cpu", 0, TAG_SR1),
        ("sr0", "cpu.sysregs.tpidr_el0", "cpu", 0, TAG_SR0),
        ("host_sr0", "cpu.kvm_host_ctxt.tpidr_el0", "cpu", 0, TAG_SR0),
        ("msr1", "ctx.sysregs.el1", "ctx", 0, TAG_SR1),
        ("msr0", "ctx.sysregs.tpidr_el0", "ctx", 0, TAG_SR0),
        ("want_sr1", "ghost.latest.sysregs_el1", "ctx", 0, TAG_SR1),
        ("want_sr0", "ghost.latest.tpidr_el0", "ctx", 0, TAG_SR0),
        ("sr_loaded", "vcpu.sysregs_loaded_on_cpu", "vcpu", 0, None),
    ),
    actions={
        GSR_WRITE: ActionSpec("guest-sysreg-write", _guest_write, _text),
        SR_EMULATE: ActionSpec("sysreg-emulate", _emulate, _text, budget="sysreg"),
        HOST_TLS: ActionSpec("host-tls-write", _host_tls, _text),
    },
    enabled=_enabled,
    check_cpu=_check_cpu,
    init=_init,
    banks=((TAG_SR1, "want_sr1"), (TAG_SR0, "want_sr0")),
    steps=_steps,
    on_switch=tls_thread_switch,
))
