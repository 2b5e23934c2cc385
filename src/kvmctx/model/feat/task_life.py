"""vl and fork: a task's vector lengths as state; clone() and exit() of host tasks.

Issue 15, items 2 and 3. Two features, one module (they share the "a task
inside a syscall" trigger and the slot bookkeeping).

``vl`` (kinds 70-72). A task's SVE VL and SME streaming VL become per-task
state (``thread.sve_vl``, ``thread.sme_vl``; initial values from the
TaskSpec), read by every save, load and bind (``kvmctx.model.host.task_vq``).
Each task has two VLs to choose from, its configured one and another (double,
or half at 2048 bits); a change switches to the one it does not have.

* ``prctl-sve-vl`` (70): an SVE task inside a syscall, prctl(PR_SVE_SET_VL)
  of the other VL. ``prctl-sme-vl`` (72): the same for an SME task's
  streaming VL (PR_SME_SET_VL). The syscall entry and its preemptible points
  are the core's; the change itself is one step.
* ``ptrace-sve-vl`` (71, with ``ptrace`` on): a debugger writes a stopped SVE
  task's NT_ARM_SVE at the other VL: the VL change, then the payload (a new
  SVE image, as ``ptrace-sve``).

The change follows vec_set_vector_length() / change_live_vector_length() of
v6.16: the state of ``current`` is saved and its binding invalidated
(fpsimd_save_and_flush_current_state; for a stopped task only the
invalidation); the FPSIMD image is brought up to date from the effective
state (fpsimd_sync_from_effective_state: from the SVE image when fp_type is
SVE; 49ce484187f7, ``HostConfig.vl_change_syncs_effective``: before it,
sve_to_fpsimd() ran whenever TIF_SVE was set); the VL is set; a new, zeroed
SVE buffer replaces the old one and, when fp_type is SVE, is filled from the
FPSIMD image (fpsimd_sync_to_effective_state_zeropad). TIF_SVE, fp_type and
PSTATE.SM are kept (b87c8c4aca11, ``HostConfig.vl_change_keeps_mode``; before it
the task went to FPSIMD form, fp_type FPSIMD and TIF_SVE clear, and an SVE
change left a streaming task's SM set). An SME VL change also turns ZA off
(thread.svcr.ZA cleared, the ZA storage replaced). Z bits above 128, P and FFR are zero
afterwards, so the task's latest upper value becomes zero.

``fork`` (kinds 73, 74). The threads of the configuration are a fixed pool of
task slots; a slot whose runqueue field is ``NO_CPU`` is free (no task).

* ``exit`` (74): a running host task inside a syscall calls exit(): its final
  __schedule() (fpsimd_thread_switch saves its state, the CPU switches to
  idle) and the release of its task_struct (fpsimd_release_task). A per-CPU
  binding that names it is *not* cleared (Linux does not), and its registers
  may still be live there. The slot is reset to its initial values (every
  thread and context field of the task and of its kernel-NEON context), so a
  free slot is canonical and equal free slots are equal states; the dead
  task's values left in CPU registers become ``garbage`` (a later reader of
  them reads somebody else's dead state, never a value of the new owner).
* ``clone`` (73, argument: the free slot): a running host task inside a
  syscall (clone()) creates a thread in a free slot, possibly one just
  released: the same task_struct address, so a binding that still names the
  dead task names the child. arch_dup_task_struct() of v6.16 saves the
  parent's live state and invalidates its binding
  (fpsimd_save_and_flush_current_state), copies the effective FPSIMD state
  (fpsimd_sync_from_effective_state) and gives the child FPSIMD form, no
  TIF_SVE/TIF_SME, PSTATE.SM and ZA off (task_smstop_sm(dst), a6d066f70574,
  ``HostConfig.clone_clears_sm``: V0-V31 zero for a streaming parent; before it
  the child inherited SM; e0cb0f26594c,
  ``HostConfig.clone_syncs_effective``; before it: fpsimd_preserve_current_state,
  a save without the invalidation, and the possibly stale
  thread.uw.fpsimd_state copied). copy_thread() then invalidates the child's
  fpsimd_cpu (071b6d4a5d34, ``HostConfig.clone_flushes_task``; before it the
  child kept the parent's). The child starts in the kernel at ret_from_fork on
  the parent's CPU's runqueue; its VLs are the parent's. A child whose copied
  V0-V31 are not its parent's latest is reported at once (integrity).

With ``vmm-respawn`` a VMM (vCPU) thread may exit too, outside KVM_RUN (at EL0
or in a syscall: its vCPU is put), and a host task's clone may fill its slot:
the new thread runs the same vCPU, whose state KVM keeps.

Bounds simplifications: a new vCPU thread takes its predecessor's slot; the child
takes the static kind (SVE/SME/kernel-NEON use) of the slot it gets; clone is
a thread clone (ZA not inherited: CLONE_VM, as copy_thread_za leaves it).
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.model import host as H
from kvmctx.model.feat import host_life as HL
from kvmctx.model.features import ActionSpec, Feature, register
from kvmctx.model.flow import CHK_USER, K_USER
from kvmctx.model.layout import CPU, CTX, THREAD
from kvmctx.model.values import (
    FP_STATE_FPSIMD,
    FP_STATE_SVE,
    GARBAGE,
    NO_CPU,
    OWNER_MASK,
    ZERO,
    tag,
)

PRCTL_SVE_VL = 70
PTRACE_SVE_VL = 71
PRCTL_SME_VL = 72
CLONE = 73
EXIT = 74


def _other_vq(vq: int) -> int:
    """The second VL a task may choose (128-bit units): double, or half at 2048."""
    return vq * 2 if vq * 2 <= 16 else vq // 2


def _in_syscall(m, s, t: int, pc: int) -> bool:
    """A running host task inside a syscall (not a VMM thread)."""
    return bool(t) and pc == m.L_SYS and m.vcpu_of[t] < 0


# ------------------------------------------------------------------ vl


def _vl_enabled(m, s, k, t, pc, kind, out) -> None:
    if not _in_syscall(m, s, t, pc):
        return
    if m.task_sve[t]:
        out.append((PRCTL_SVE_VL, k, 0))
    if m.task_sme[t]:
        out.append((PRCTL_SME_VL, k, 0))


def _vl_enabled_global(m, s, running, out) -> None:
    if not m.config.has("ptrace"):
        return
    for u in range(1, m.nthreads):
        if m.task_sve[u] and s[m.rq[u]] != NO_CPU and HL._stopped(m, s, u, running):
            out.append((PTRACE_SVE_VL, u, 0))


def change_vl(m, s, t: int, k: int, sme: bool) -> None:
    """vec_set_vector_length(t, SVE or SME, the other VL); k: t's CPU if t is current."""
    if k >= 0:
        H.fpsimd_save_user_state(m, s, k)   # fpsimd_save_and_flush_current_state()
    H.fpsimd_flush_task_state(m, s, t)
    sve_form = s[m.fp_type[t]] == FP_STATE_SVE
    if m.hc.vl_change_syncs_effective:
        if sve_form:
            s[m.mem_lo[t]] = s[m.mem_zlo[t]]   # fpsimd_sync_from_effective_state()
    elif s[m.tif_sve[t]] or (m.has_sme and s[m.svcr_sm[t]]):
        s[m.mem_lo[t]] = s[m.mem_zlo[t]]       # before 49ce484187f7: sve_to_fpsimd()
    if not m.hc.vl_change_keeps_mode:
        # Before b87c8c4aca11: "convert to a regular FPSIMD thread" (fp_type FPSIMD,
        # TIF_SVE clear). SM, ZA and TIF_SME go only for an SME change or a task with
        # neither on; an SVE change leaves a streaming task with SM set in FPSIMD form.
        sve_form = False
        s[m.fp_type[t]] = FP_STATE_FPSIMD
        s[m.tif_sve[t]] = 0
        if m.has_sme and (sme or not (s[m.svcr_sm[t]] or s[m.svcr_za[t]])):
            s[m.svcr_sm[t]] = s[m.want_sm[t]] = 0   # the ABI then: SM cleared, V0-V31 kept
            s[m.tif_sme[t]] = 0
    if sme:
        s[m.tsvq[t]] = _other_vq(m.task_svq[t]) if s[m.tsvq[t]] == m.task_svq[t] \
            else m.task_svq[t]
        # thread.svcr &= ~SVCR_ZA_MASK, new sme_state: ZA is off and gone.
        s[m.svcr_za[t]] = 0
        s[m.mem_za[t]] = ZERO
        s[m.want_zaon[t]] = 0
        s[m.want_za[t]] = ZERO
    else:
        s[m.tvq[t]] = _other_vq(m.ctx_vq[t]) if s[m.tvq[t]] == m.ctx_vq[t] else m.ctx_vq[t]
    # A new zeroed sve_state; fpsimd_sync_to_effective_state_zeropad() refills it.
    s[m.mem_zlo[t]] = s[m.mem_lo[t]] if sve_form else ZERO
    s[m.mem_hi[t]] = ZERO
    s[m.want_hi[t]] = ZERO
    s[m.permit[t]] = 0
    m.ctr[C.VL_CHANGES] += 1


def _prctl_sve_vl(m, s, a) -> None:
    k = a[1]
    change_vl(m, s, s[m.cur[k]], k, False)


def _prctl_sme_vl(m, s, a) -> None:
    k = a[1]
    change_vl(m, s, s[m.cur[k]], k, True)


def _ptrace_sve_vl(m, s, a) -> None:
    u = a[1]
    change_vl(m, s, u, -1, False)
    HL._ptrace_sve(m, s, (HL.PTRACE_SVE, u, 0))   # then the payload at the new VL


def _vl_check_cpu(m, s, k) -> None:
    """A task at EL0 with SVE enabled runs at its own VL (ZCR_EL1.LEN): after a VL
    change it must not keep registers loaded at the old one (streaming mode: SMCR)."""
    t = s[m.cur[k]]
    if not t or m.p_check[s[m.pc[t]]] != CHK_USER:
        return
    if m.has_sme and s[m.sm[k]]:
        if s[m.svl[k]] != s[m.tsvq[t]]:
            m.violate("integrity", f"{m.tname(t)} at EL0 on CPU{k} runs streaming SVE at VL"
                      f"{128 * s[m.svl[k]]}, its streaming VL is {128 * s[m.tsvq[t]]}", k, (t,))
    elif s[m.zen[k]] and s[m.vl[k]] != s[m.tvq[t]]:
        m.violate("integrity", f"{m.tname(t)} at EL0 on CPU{k} runs SVE at VL"
                  f"{128 * s[m.vl[k]]}, its VL is {128 * s[m.tvq[t]]}", k, (t,))


def _vl_init(m, s) -> None:
    for t in range(1, m.nthreads):
        s[m.tvq[t]] = m.ctx_vq[t]
        s[m.tsvq[t]] = m.task_svq[t]


register(Feature(
    name="vl",
    fields=(("tvq", "thread.sve_vl", THREAD, 1, None),
            ("tsvq", "thread.sme_vl", THREAD, 1, None)),
    actions={
        PRCTL_SVE_VL: ActionSpec("prctl-sve-vl", _prctl_sve_vl, lambda m, s, a:
                                 f"{m.tname(s[m.cur[a[1]]])}: prctl(PR_SVE_SET_VL) to VL"
                                 f"{128 * _other_vq(s[m.tvq[s[m.cur[a[1]]]]])}"
                                 if s[m.tvq[s[m.cur[a[1]]]]] == m.ctx_vq[s[m.cur[a[1]]]]
                                 else f"{m.tname(s[m.cur[a[1]]])}: prctl(PR_SVE_SET_VL) back "
                                 f"to VL{128 * m.ctx_vq[s[m.cur[a[1]]]]}", budget="vl"),
        PTRACE_SVE_VL: ActionSpec("ptrace-sve-vl", _ptrace_sve_vl, lambda m, s, a:
                                  f"debugger: PTRACE_SETREGSET NT_ARM_SVE with another VL on "
                                  f"stopped {m.tname(a[1])}", budget="vl", cpu_arg=False),
        PRCTL_SME_VL: ActionSpec("prctl-sme-vl", _prctl_sme_vl, lambda m, s, a:
                                 f"{m.tname(s[m.cur[a[1]]])}: prctl(PR_SME_SET_VL) to the other "
                                 "streaming VL", budget="vl"),
    },
    enabled=_vl_enabled,
    enabled_global=_vl_enabled_global,
    check_cpu=_vl_check_cpu,
    init=_vl_init,
))


# ------------------------------------------------------------------ fork


def _fork_enabled(m, s, k, t, pc, kind, out) -> None:
    respawn = "vmm-respawn" in m.config.features
    if respawn and t and m.vcpu_of[t] >= 0:
        # A vCPU thread leaves outside KVM_RUN (its vCPU is put): at EL0 or in a
        # syscall such as KVM_SET_ONE_REG.
        if kind == K_USER or pc == m.L_SYS:
            out.append((EXIT, k, 0))
        return
    if not _in_syscall(m, s, t, pc):
        return
    out.append((EXIT, k, 0))
    for u in range(1, m.nthreads):
        if s[m.rq[u]] == NO_CPU and (respawn or m.vcpu_of[u] < 0):
            out.append((CLONE, k, u))


def _slot_indices(m, t: int) -> list[int]:
    """Every state index that belongs to task slot t (its thread and contexts)."""
    out = []
    for f in m.layout.fields.values():
        if f.dim == THREAD:
            out.append(f.start + t)
        elif f.dim == CTX:
            out.append(f.start + t)
            out.append(f.start + m.kn_ctx[t])
    return out


def _scrub(m, s, t: int) -> None:
    """The dead task's values still in per-CPU places (registers, a policy's per-CPU
    stash): nobody's from now on."""
    owners = (t, m.kn_ctx[t])
    for f in m.layout.fields.values():
        if f.dim != CPU or not (f.ref or "").startswith("tag_"):
            continue
        for i in range(f.start, f.start + f.count):
            x = s[i]
            if x != ZERO and (x & OWNER_MASK) in owners:
                s[i] = GARBAGE


def _exit(m, s, a) -> None:
    k = a[1]
    t = s[m.cur[k]]
    m.sched(s, k, 0)                    # do_task_dead(): the final __schedule()
    _scrub(m, s, t)
    init = m.init_state
    for i in _slot_indices(m, t):       # fpsimd_release_task(), put_task_struct()
        s[i] = init[i]
    s[m.rq[t]] = NO_CPU                 # a free slot
    s[m.pc[t]] = m.L_IDLE
    s[m.insys[t]] = 0
    m.ctr[C.TASK_EXITS] += 1


def _clone(m, s, a) -> None:
    k, u = a[1], a[2]
    t = s[m.cur[k]]
    hc = m.hc
    H.fpsimd_save_user_state(m, s, k)
    if hc.clone_syncs_effective:
        H.fpsimd_flush_task_state(m, s, t)       # fpsimd_save_and_flush_current_state()
        if s[m.fp_type[t]] == FP_STATE_SVE:
            s[m.mem_lo[t]] = s[m.mem_zlo[t]]     # fpsimd_sync_from_effective_state()
    copied = s[m.mem_lo[t]]                      # *dst = *src
    if copied != s[m.want_lo[t]]:
        m.violate("integrity", f"clone(): the child of {m.tname(t)} starts with V0-V31 = "
                  f"{m.tagname(copied)}, not its parent's latest {m.tagname(s[m.want_lo[t]])}",
                  k, (t,))
    # The child's own copy: a fresh value of its slot, in FPSIMD form.
    v = s[m.ver[u]] + 1
    s[m.ver[u]] = v
    x = tag(u, v)
    s[m.mem_lo[u]] = x
    s[m.want_lo[u]] = x
    s[m.fcpu[u]] = NO_CPU if hc.clone_flushes_task else s[m.fcpu[t]]
    if m.has_vl:
        s[m.tvq[u]] = s[m.tvq[t]]
        s[m.tsvq[u]] = s[m.tsvq[t]]
    parent_sm = m.has_sme and s[m.svcr_sm[t]]   # only a ptrace write at a stop sets it
    if m.has_fpmr and s[m.want_fpmr[t]] != ZERO and not (parent_sm and hc.clone_clears_sm):
        s[m.mem_fpmr[u]] = s[m.want_fpmr[u]] = x   # the parent's FPMR, as the child's
    if parent_sm:
        if hc.clone_clears_sm:
            # task_smstop_sm(dst) (a6d066f70574): SM clear, V0-V31 and FPMR zeroed.
            s[m.mem_lo[u]] = s[m.want_lo[u]] = ZERO
        else:
            # Before it: thread.svcr.SM inherited, with fp_type FPSIMD, no sve_state and
            # TIF_SME clear (ZA off). The SME ABI (sme.rst) promises a clone() child
            # PSTATE.SM clear: its expected SVCR stays SM = 0.
            s[m.svcr_sm[u]] = 1
    s[m.foreign[u]] = 1
    s[m.pc[u]] = m.L_SYS                         # ret_from_fork
    s[m.insys[u]] = 1
    s[m.rq[u]] = k                               # wake_up_new_task()
    m.ctr[C.TASK_CLONES] += 1
    m.ctr[C.CLONE_BYTES] += m.fpsimd_bytes[t]   # *dst = *src: the FPSIMD image


register(Feature(
    name="fork",
    actions={
        CLONE: ActionSpec("clone", _clone, lambda m, s, a:
                          f"{m.tname(s[m.cur[a[1]]])}: clone(): a new thread in slot "
                          f"{m.tname(a[2])}", budget="clone"),
        EXIT: ActionSpec("exit", _exit, lambda m, s, a:
                         f"{m.tname(s[m.cur[a[1]]])}: exit(): last switch, task released",
                         budget="exit"),
    },
    enabled=_fork_enabled,
))
