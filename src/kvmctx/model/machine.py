"""The transition system: state layout, actions, one step function.

``Model(config, policy)`` builds everything once: the flat state layout, the
compiled program, index tables. After that the hot path is

    m.apply(s, action)        # s: list[int], mutated in place

used by the simulator (which keeps one list) and by the checker (which
copies a stored tuple, applies, and stores the result). One truth, two
engines.

Actions are small int tuples ``(kind, a, b)``:

======== ===================== ==============================================
kind     arguments             meaning
======== ===================== ==============================================
STEP     cpu                   run the current thread's next kernel step(s)
SCHED    cpu, next thread      context switch (0 = idle)
MIGRATE  thread, cpu           move a runnable (not running) thread
SIRQ     cpu                   a softirq uses kernel-mode NEON
UFP      cpu                   the task at EL0 writes FPSIMD registers
USVE     cpu                   the task at EL0 writes SVE registers (may trap)
SYSCALL  cpu                   the task at EL0 makes a syscall
KVMRUN   cpu                   the VMM thread at EL0 calls ioctl(KVM_RUN)
KNEON    cpu                   the task in a syscall starts kernel-mode NEON
GFP      cpu                   the guest writes FPSIMD registers (may trap)
GSVE     cpu                   the guest writes SVE registers (may trap)
GEXIT    cpu, exit class       the guest exits (EXIT_KERNEL / EXIT_USER)
READ     cpu                   the EL0 task / guest / NEON user reads (check)
======== ===================== ==============================================

Reads never change the state, so the checker does not branch on them:
the integrity/confidentiality invariant is evaluated on every state for
every context that *could* read at that moment, which is equivalent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kvmctx.model import counters as C
from kvmctx.model import host as H
from kvmctx.model.config import ModelConfig
from kvmctx.model.flow import (
    CHK_GUEST,
    CHK_KNEON,
    CHK_NONE,
    CHK_USER,
    EXIT_KERNEL,
    EXIT_USER,
    K_GUEST,
    K_IDLE,
    K_REST,
    K_STEP,
    K_USER,
    build_program,
)
from kvmctx.model.layout import (
    CPU,
    CTX,
    REF_CPU,
    REF_CTX,
    REF_PC,
    REF_THREAD,
    REF_VER,
    TAG_HI,
    TAG_LO,
    THREAD,
    VCPU,
    Layout,
)
from kvmctx.model.policy import Policy, StateField
from kvmctx.model.values import (
    FP_STATE_FPSIMD,
    FP_STATE_SVE,
    GARBAGE,
    NO_CPU,
    NONE,
    OWNER_BITS,
    OWNER_MASK,
    ZERO,
    describe,
    tag,
)

STEP, SCHED, MIGRATE, SIRQ, UFP, USVE, SYSCALL, KVMRUN, KNEON, GFP, GSVE, GEXIT, READ = range(13)
FOREIGN_UNDECIDED = 2  # poison for the switch-in check in Model.sched
ACTION_NAMES = ("step", "sched", "migrate", "softirq-neon", "user-fp", "user-sve", "syscall",
                "kvm-run", "kernel-neon", "guest-fp", "guest-sve", "guest-exit", "read")


class Violation:
    """An invariant broken at a step: what, where, and who."""

    __slots__ = ("invariant", "message", "cpu", "contexts")

    def __init__(self, invariant: str, message: str, cpu: int, contexts: tuple[int, ...]):
        self.invariant = invariant
        self.message = message
        self.cpu = cpu
        self.contexts = contexts

    def as_dict(self, m: Model | None = None) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "message": self.message,
            "cpu": self.cpu,
            "contexts": [m.name(c) for c in self.contexts] if m else list(self.contexts),
        }

    def __repr__(self) -> str:
        return f"Violation({self.invariant}: {self.message})"


def _sve_bytes(vl: int) -> int:
    # Z0-Z31 + P0-P15 + FFR (protocol.md section 1): 32*VL/8 + 17*VL/64 bytes.
    return 32 * vl // 8 + 17 * vl // 64


class Model:
    """One configuration x one policy: the transition function and its tables."""

    def __init__(self, config: ModelConfig, policy: Policy) -> None:
        self.config = config
        self.policy = policy
        self.hc = policy.host
        self.ncpu = config.cpus
        tasks = config.tasks
        self.nthreads = len(tasks) + 1  # thread 0 is the idle thread
        self.nvcpu = len(config.vcpus)
        nt = len(tasks)
        nv = self.nvcpu
        # Context ids: 1..nt threads' user state, then vCPUs, then per-thread
        # kernel-mode NEON state, then softirq scratch. 0 is "none".
        self.vctx = [nt + 1 + v for v in range(nv)]
        self.kn_ctx = [0] + [nt + nv + t for t in range(1, nt + 1)]
        self.kn_owner = {nt + nv + t: t for t in range(1, nt + 1)}
        self.sirq_ctx = 2 * nt + nv + 1
        self.nctx = self.sirq_ctx + 1
        self.has_sve = True
        self.has_sme = config.has("sme")
        self.has_fpmr = config.has("fpmr")
        self.has_isb = config.has("isb")   # pending trap-control writes (feat/isb.py)
        self.sme_regsets = self.has_sme and config.has("sme-regsets")  # feat/regsets.py
        if self.has_isb:
            from kvmctx.model.feat.isb import sync_before
            self.isb_sync = sync_before
        self.has_vl = config.has("vl")   # per-task VLs are state (feature "vl")

        names = {0: "none", GARBAGE: "garbage"}
        for i, ts in enumerate(tasks, start=1):
            names[i] = ts.name
            names[self.kn_ctx[i]] = f"{ts.name}/kernel-NEON"
        for v, vs in enumerate(config.vcpus):
            names[self.vctx[v]] = vs.name
        names[self.sirq_ctx] = "softirq-NEON"
        self.names = names
        self.thread_names = ["idle"] + [t.name for t in tasks]

        self.vcpu_of = [-1] + [t.vcpu for t in tasks]
        self.vthread = [0] * nv
        for i, ts in enumerate(tasks, start=1):
            if ts.vcpu >= 0:
                self.vthread[ts.vcpu] = i
        self.vctx_of_thread = [0] * self.nthreads  # 0: not a VMM thread
        for v, th in enumerate(self.vthread):
            self.vctx_of_thread[th] = self.vctx[v]
        self.task_sve = [False] + [t.sve for t in tasks]
        self.task_kneon = [False] + [t.kneon for t in tasks]
        # SME (feature "sme"): which tasks use streaming mode/ZA and their streaming VL.
        self.task_sme = [False] + [t.sme and self.has_sme for t in tasks]
        self.task_svq = [1] + [t.svl // 128 for t in tasks]
        # ZA is (SVL/8)^2 bytes, plus the 64-byte ZT0 of SME2.
        self.za_bytes = [0] + [(t.svl // 8) ** 2 + 64 for t in tasks]
        self.ssve_bytes = [0] + [_sve_bytes(t.svl) for t in tasks]
        self.vcpu_sve = [v.sve for v in config.vcpus]
        # Per-context vector length and image sizes.
        ctx_vl = [128] * self.nctx
        for i, ts in enumerate(tasks, start=1):
            ctx_vl[i] = ts.vl
        for v, vs in enumerate(config.vcpus):
            ctx_vl[self.vctx[v]] = vs.vl
        self.ctx_vl = ctx_vl
        self.ctx_vq = [vl // 128 for vl in ctx_vl]  # state fields hold VLs in 128-bit units
        self.fpsimd_bytes = [520] * self.nctx
        for v, vs in enumerate(config.vcpus):
            if vs.aarch32:
                self.fpsimd_bytes[self.vctx[v]] = 528  # + FPEXC32_EL2
        if policy.arch == "arm32":
            # VFPv3-D32: d0-d31 + FPEXC, FPSCR, FPINST, FPINST2
            self.fpsimd_bytes = [272] * self.nctx
        self.sve_bytes = [_sve_bytes(vl) for vl in ctx_vl]
        # Contexts whose state must stay recoverable: (ctx, is a thread, hi bank static).
        self.rec_ctx = [(t, True, False) for t in range(1, self.nthreads)]
        self.rec_ctx += [(self.vctx[v], False, bool(self.vcpu_sve[v])) for v in range(nv)]

        from kvmctx.model import features as FT

        self.feats = [f for f in (FT.get(n) for n in sorted(config.features)) if f is not None]
        self.ext_actions = {}
        for f in self.feats:
            self.ext_actions.update(f.actions)
        self._build_layout()
        extra: dict[str, tuple] = {}
        for f in self.feats:
            if f.steps is not None:
                for hook, steps in f.steps(self).items():
                    extra[hook] = extra.get(hook, ()) + tuple(steps)
        self.extra_steps = extra
        self.put_steps = tuple(policy.vcpu_put) + extra.get("vcpu_put", ())
        self.switch_hooks = [f.on_switch for f in self.feats if f.on_switch is not None]
        self.prog = build_program(policy, self.hc.kernel_neon_preemptible, extra)
        pts = self.prog.points
        self.p_fn = [p.fn for p in pts]
        self.p_kind = [p.kind for p in pts]
        self.p_sirq = [p.sirq for p in pts]
        self.p_preempt = [p.preempt for p in pts]
        self.p_check = [p.check for p in pts]
        self.p_chain = [p.kind == K_STEP and not p.sirq and not p.preempt for p in pts]
        # Rest points: where a thread may sit while others run (its state must be
        # recoverable there). Inside a hook, only preemptible gaps count.
        self.p_rest = [p.kind in (K_IDLE, K_USER, K_GUEST, K_REST) or p.preempt for p in pts]
        self.p_irqs_off = [p.irqs_off for p in pts]
        self.p_bh_off = [p.bh_off for p in pts]
        L = self.prog.labels
        self.L_IDLE, self.L_USER, self.L_SYS = L["IDLE"], L["USER"], L["SYS"]
        self.L_KNEON, self.L_RUN, self.L_TOP = L["KNEON"], L["RUN"], L["TOP"]
        self.L_GUEST, self.L_EXIT, self.L_POST = L["GUEST"], L["EXIT"], L["POST"]
        self.L_OUT, self.L_RET, self.L_SCHED_IN = L["OUT"], L["RET"], L["SCHED_IN"]
        self.L_SVE_TRAP, self.L_SME_TRAP = L["SVE_TRAP"], L["SME_TRAP"]
        self.L_TRAP_PUT = L["TRAP_PUT"]
        self.trap_window = config.has("trap-window")
        self.L_EXIT_CHECK = L["EXIT_CHECK"]
        self.L_SYS_ENTRY, self.L_RUN_ENTRY = L["SYS_ENTRY"], L["RUN_ENTRY"]
        self.ret_window = config.has("ret-window")
        self._init_state()

        self.ctr = C.new()
        self.vio: list[Violation] = []
        # (context, lost lo, lost hi) already reported, so a lost state is
        # reported once by the simulator rather than at every later event.
        self.reported_lost: set[tuple[int, int, int]] = set()
        self.dedupe_lost = False  # the simulator turns it on; the checker never does
        # Execution context of the step being run (WARN_ON conditions read it).
        self.in_softirq = False
        self.irqs_off = False
        self.check_invariants = True

    # ------------------------------------------------------------------ layout

    # Model fields: (attribute, name, dimension, initial value, what the value refers to).
    MODEL_FIELDS: tuple[tuple[str, str, str, int, str | None], ...] = (
        # Per CPU: live registers and their metadata.
        ("cur", "cpu.current", CPU, 0, REF_THREAD),
        ("lo", "cpu.regs.fpsimd", CPU, ZERO, TAG_LO),
        ("hi", "cpu.regs.sve_upper", CPU, ZERO, TAG_HI),
        ("vl", "cpu.zcr_vq", CPU, 1, None),  # live VL in 128-bit units
        ("bound", "cpu.fpsimd_last_state", CPU, NONE, REF_CTX),
        ("to_save", "cpu.fpsimd_last_state.to_save", CPU, 0, None),
        ("bound_vl", "cpu.fpsimd_last_state.sve_vq", CPU, 1, None),
        ("zen", "cpu.cpacr.zen_el0", CPU, 0, None),
        ("gtrap", "cpu.cptr.guest_fp_trap", CPU, 1, None),
        ("sm", "cpu.svcr.sm", CPU, 0, None),
        ("online", "cpu.online", CPU, 1, None),
        ("vfp_en", "cpu.fpexc.en", CPU, 0, None),  # arm32 lazy VFP (FPEXC.EN)
        # Per context: saved images, binding, and the ghost "latest value".
        ("mem_lo", "ctx.fpsimd_state", CTX, ZERO, TAG_LO),
        ("mem_zlo", "ctx.sve_state.low", CTX, ZERO, TAG_LO),
        ("mem_hi", "ctx.sve_state.upper", CTX, ZERO, TAG_HI),
        ("fp_type", "ctx.fp_type", CTX, FP_STATE_FPSIMD, None),
        ("fcpu", "ctx.fpsimd_cpu", CTX, NO_CPU, REF_CPU),
        ("want_lo", "ghost.latest.fpsimd", CTX, ZERO, TAG_LO),
        ("want_hi", "ghost.latest.sve_upper", CTX, ZERO, TAG_HI),
        ("ver", "ghost.version", CTX, 0, REF_VER),
        ("permit", "ghost.sve_discard_allowed", CTX, 0, None),
        # Per thread: where it is, and the thread_info flags.
        ("pc", "thread.pc", THREAD, 0, REF_PC),
        ("rq", "thread.runqueue", THREAD, 0, REF_CPU),
        ("foreign", "thread.TIF_FOREIGN_FPSTATE", THREAD, 1, None),
        ("tif_sve", "thread.TIF_SVE", THREAD, 0, None),
        ("kfp", "thread.TIF_KERNEL_FPSTATE", THREAD, 0, None),
        ("insys", "thread.in_syscall", THREAD, 0, None),
        ("resume", "thread.resume_pc", THREAD, 0, REF_PC),
        # Per vCPU.
        ("vcpu_cpu", "vcpu.cpu", VCPU, NO_CPU, REF_CPU),
        ("exitcls", "vcpu.exit_class", VCPU, EXIT_KERNEL, None),
        ("gvl", "vcpu.zcr_el1_vq", VCPU, 1, None),
        ("gtrapped", "ghost.fp_trap_handled_this_stay", VCPU, 0, None),
    )

    def _build_layout(self) -> None:
        """Allocate every field; register tags first, low bank then high bank.

        Keeping each bank's tags contiguous lets the checker renumber versions
        with one ``bytes.translate`` per bank.
        """
        L = Layout({CPU: self.ncpu, THREAD: self.nthreads, CTX: self.nctx, VCPU: self.nvcpu})
        specs: list[tuple[str | None, str, str, int, str | None, str]] = [
            (attr, name, dim, init, ref, "model")
            for attr, name, dim, init, ref in self.MODEL_FIELDS
        ]
        for f in self.feats:
            # A 6th element names the features a field needs (allocated only with them).
            specs.extend((sp[0], sp[1], sp[2], sp[3], sp[4], "model") for sp in f.fields
                         if len(sp) < 6 or all(self.config.has(x) for x in sp[5]))
        dims = ((CPU, self.policy.cpu_fields), (THREAD, self.policy.thread_fields),
                (VCPU, self.policy.vcpu_fields))
        pol_specs: dict[str, StateField] = {}
        for dim, fields in dims:
            for fname, spec in fields.items():
                specs.append((None, fname, dim, spec.init, spec.ref, self.policy.name))
                pol_specs[fname] = spec

        # Tag banks first (low, high, then feature banks by name), each contiguous;
        # then CPU ids, thread ids, context ids, version counters, the rest.
        tag_kinds = [TAG_LO, TAG_HI] + sorted(
            {sp[4] for sp in specs if sp[4] and sp[4].startswith("tag_")} - {TAG_LO, TAG_HI})
        order = {kind: i for i, kind in enumerate(tag_kinds)}
        nt = len(tag_kinds)
        order.update({REF_CPU: nt, REF_THREAD: nt + 1, REF_CTX: nt + 2, REF_VER: nt + 3})
        ngroups = nt + 5

        def group(sp: tuple) -> int:
            return order.get(sp[4], nt + 4)

        self.pf: dict[str, list[int]] = {}
        self.stash_slots: list[tuple[int, bool]] = []  # (index, is_hi)
        bounds: dict[int, list[int]] = {g: [] for g in range(ngroups)}
        for sp in sorted(specs, key=group):  # stable: declaration order within a group
            attr, name, dim, init, ref, owner = sp
            if owner == "model":
                idx = L.add(name, dim, init, ref)
                setattr(self, attr, idx)
            else:
                idx = L.add(f"{owner}.{dim}.{name}", dim, init, ref, owner=owner)
                self.pf[name] = idx
                if pol_specs[name].stash:
                    self.stash_slots.extend((i, ref == TAG_HI) for i in idx)
            if idx:
                bounds[group(sp)].extend((idx[0], idx[-1] + 1))
        # Contiguous slices per kind of value, in this order: low-bank tags, high-bank
        # tags, CPU ids, thread ids, context ids, version counters, the rest.
        ends = []
        prev = 0
        for g in range(ngroups):
            prev = max(bounds[g]) if bounds[g] else prev
            ends.append(prev)
        starts = [0] + ends[:-1]
        self.tag_lo_start = 0
        self.tag_hi_start, self.tag_hi_end = ends[0], ends[1]
        self.tags_end = ends[nt - 1]
        # (first index, end index, ref kind) of each tag bank
        self.bank_slices = [(starts[i], ends[i], kind) for i, kind in enumerate(tag_kinds)]
        self.slice_cpu = (starts[nt], ends[nt])
        self.slice_thread = (starts[nt + 1], ends[nt + 1])
        self.slice_ctx = (starts[nt + 2], ends[nt + 2])
        self.slice_ver = (starts[nt + 3], ends[nt + 3])
        self.layout = L
        # Which "latest value" field each bank's tags are compared with.
        want_attr = {TAG_LO: "want_lo", TAG_HI: "want_hi"}
        for f in self.feats:
            for kind, attr in f.banks:
                want_attr[kind] = attr
        self.banks = [(a, z, getattr(self, want_attr[kind])[0])
                      for a, z, kind in self.bank_slices]
        extra = {kind: attr for f in self.feats for kind, attr in f.extra_wants
                 if hasattr(self, attr)}
        # Per bank: start of its second-reference field (indexed by thread), or -1.
        self.bank_extra = [getattr(self, extra[kind])[0] if kind in extra else -1
                           for _a, _z, kind in self.bank_slices]

    def _init_state(self) -> None:
        s = list(self.layout.init)
        cfg = self.config
        for c in range(1, self.nctx):
            if c == self.sirq_ctx:
                continue
            t0 = tag(c, 1)
            s[self.ver[c]] = 1
            s[self.want_lo[c]] = t0
            s[self.mem_lo[c]] = t0
            # The SVE image starts empty (zero): nothing is in SVE form until a
            # first SVE use converts the FPSIMD image (fpsimd_to_sve).
        for v, vs in enumerate(cfg.vcpus):
            s[self.gvl[v]] = vs.vl // 128
            if vs.sve:
                # KVM keeps an SVE vCPU's state in SVE form (vcpu->arch.sve_state)
                # from the start; its FPSIMD view is the low bits of that image.
                c = self.vctx[v]
                s[self.mem_zlo[c]] = s[self.mem_lo[c]]
                s[self.fp_type[c]] = FP_STATE_SVE
        for i, ts in enumerate(cfg.tasks, start=1):
            s[self.pc[i]] = self.L_SYS  # every thread starts in the kernel, about to return
            s[self.insys[i]] = 1         # ... from the syscall that created it
            s[self.rq[i]] = ts.cpu
        s[self.pc[0]] = self.L_IDLE
        for f in self.feats:
            if f.init is not None:
                f.init(self, s)
        for k in range(self.ncpu):
            s[self.vl[k]] = 1
        self.init_state = tuple(s)

    # ---------------------------------------------------------------- naming

    def name(self, c: int) -> str:
        return self.names.get(c, f"ctx{c}")

    def tname(self, t: int) -> str:
        return self.thread_names[t]

    def tagname(self, t: int) -> str:
        return describe(t, self.names)

    def violate(self, invariant: str, message: str, cpu: int, contexts: tuple[int, ...]) -> None:
        self.vio.append(Violation(invariant, message, cpu, contexts))

    # ------------------------------------------------------------ ghost writes

    def write(self, s: list[int], k: int, c: int, sve: bool) -> None:
        """Context c writes its live registers on CPU k: a new version."""
        v = s[self.ver[c]] + 1
        s[self.ver[c]] = v
        t = (v << OWNER_BITS) | c
        s[self.lo[k]] = t
        s[self.want_lo[c]] = t
        if sve:
            s[self.hi[k]] = t
            s[self.want_hi[c]] = t
        else:
            # An FPSIMD write zeroes the upper bits of the Z registers.
            s[self.hi[k]] = ZERO
            s[self.want_hi[c]] = ZERO
        s[self.permit[c]] = 0

    # ------------------------------------------------------------------ steps

    def run_point(self, s: list[int], k: int, t: int) -> None:
        """Run thread t's step at its pc, then every glued step after it."""
        pcf = self.pc[t]
        fns = self.p_fn
        chain = self.p_chain
        while True:
            pc = s[pcf]
            self.irqs_off = self.p_irqs_off[pc]
            self.in_softirq = self.p_bh_off[pc]
            nxt = fns[pc](self, s, k, t)
            if nxt is None:
                nxt = pc + 1
            s[pcf] = nxt
            if not chain[nxt]:
                break
        self.irqs_off = False
        self.in_softirq = False

    def apply(self, s: list[int], a: tuple[int, int, int]) -> None:
        kind = a[0]
        if self.has_isb:
            self.isb_sync(self, s, a)
        if kind == STEP:
            k = a[1]
            self.run_point(s, k, s[self.cur[k]])
        elif kind == SCHED:
            self.sched(s, a[1], a[2])
        elif kind == SIRQ:
            self.softirq_neon(s, a[1])
        elif kind == UFP:
            k = a[1]
            t = s[self.cur[k]]
            self.ctr[C.HOST_FP_USES] += 1
            if self.hc.arm32_lazy_vfp and not s[self.vfp_en[k]]:
                H.vfp_support_entry(self, s, k, t)
            self.write(s, k, t, False)
        elif kind == USVE:
            self.user_sve(s, a[1])
        elif kind == SYSCALL:
            k = a[1]
            t = s[self.cur[k]]
            H.syscall_enter(self, s, k, t)
            s[self.pc[t]] = self.L_SYS
            if self.ret_window:  # el0_svc: IRQs on before syscallno is recorded
                s[self.insys[t]] = 0
                s[self.pc[t]] = self.L_SYS_ENTRY
        elif kind == KVMRUN:
            k = a[1]
            t = s[self.cur[k]]
            H.syscall_enter(self, s, k, t)
            s[self.pc[t]] = self.L_RUN
            if self.ret_window:
                s[self.insys[t]] = 0
                s[self.pc[t]] = self.L_RUN_ENTRY
        elif kind == KNEON:
            self.task_neon(s, a[1])
        elif kind in (GFP, GSVE):
            self.guest_fp(s, a[1], kind == GSVE)
        elif kind == GEXIT:
            self.guest_exit(s, a[1], a[2])
        elif kind == MIGRATE:
            s[self.rq[a[1]]] = a[2]
            self.ctr[C.MIGRATIONS] += 1
        elif kind == READ:
            pass
        else:
            spec = self.ext_actions.get(kind)
            if spec is None:
                raise ValueError(f"unknown action kind {kind}")
            spec.handler(self, s, a)
            if self.check_invariants and spec.cpu_arg:
                self.check_cpu(s, a[1])
            return
        if self.check_invariants and kind != MIGRATE:
            self.check_cpu(s, a[1])

    def sched(self, s: list[int], k: int, nxt: int) -> None:
        """__schedule() on CPU k: prev -> nxt, IRQs off throughout."""
        prev = s[self.cur[k]]
        if self.ret_window and prev and s[self.pc[prev]] == self.L_USER:
            # Preempted at EL0: it resumes inside exit_to_user_mode()'s loop.
            s[self.pc[prev]] = self.L_EXIT_CHECK
        if prev:
            v = self.vcpu_of[prev]
            if v >= 0 and s[self.vcpu_cpu[v]] != NO_CPU:
                # kvm_sched_out -> kvm_arch_vcpu_put, then kvm_sched_in on return.
                self.irqs_off = True
                for st in self.put_steps:
                    st.fn(self, s, k, prev)
                s[self.vcpu_cpu[v]] = NO_CPU
                self.ctr[C.VCPU_PUTS] += 1
                s[self.resume[prev]] = s[self.pc[prev]]
                s[self.pc[prev]] = self.L_SCHED_IN
                self.irqs_off = False
        # The checker's dead-field reduction sets TIF_FOREIGN_FPSTATE of every thread
        # that is not running to 1, which is sound only because the switch-in decides it
        # afresh (fpsimd_thread_switch's update_tsk_thread_flag). Check that premise:
        # poison the flag, and it must come back decided. (A thread inside a kernel-mode
        # NEON section keeps the flag kernel_neon_begin set, as in Linux.)
        decide = (nxt and self.check_invariants and not self.hc.arm32_lazy_vfp
                  and not (self.hc.kernel_neon_preemptible and s[self.kfp[nxt]]))
        if decide:
            s[self.foreign[nxt]] = FOREIGN_UNDECIDED
        H.fpsimd_thread_switch(self, s, k, prev, nxt)
        if decide and s[self.foreign[nxt]] == FOREIGN_UNDECIDED:
            self.violate("no-bug", f"fpsimd_thread_switch() left TIF_FOREIGN_FPSTATE of "
                         f"{self.tname(nxt)} undecided: it keeps a stale value from when it "
                         "last ran (the checker's dead-field reduction relies on this "
                         "update)", k, (nxt,))
            s[self.foreign[nxt]] = 1
        for hook in self.switch_hooks:
            hook(self, s, k, prev, nxt)
        s[self.cur[k]] = nxt
        if nxt:
            s[self.rq[nxt]] = k
            if s[self.pc[nxt]] == self.L_USER:
                # next was preempted on its way back to EL0: it finishes ret_to_user.
                H.fpsimd_restore_current_state(self, s, k, nxt)
        self.ctr[C.CTX_SWITCHES] += 1

    def softirq_neon(self, s: list[int], k: int) -> None:
        """A softirq on CPU k uses kernel-mode NEON (dm-crypt, IPsec...)."""
        self.in_softirq = True
        H.kernel_neon_begin(self, s, k, True)
        scratch = tag(self.sirq_ctx, 1)
        s[self.lo[k]] = scratch
        s[self.hi[k]] = scratch
        H.kernel_neon_end(self, s, k, True)
        self.in_softirq = False
        t = s[self.cur[k]]
        if t and s[self.pc[t]] == self.L_USER:
            if self.ret_window:
                # The interrupt returns through exit_to_user_mode()'s loop.
                s[self.pc[t]] = self.L_EXIT_CHECK
                return
            # The interrupt returns to EL0 through ret_to_user (IRQs off).
            H.fpsimd_restore_current_state(self, s, k, t)

    def task_neon(self, s: list[int], k: int) -> None:
        """kernel_neon_begin() in task context (inside a syscall)."""
        t = s[self.cur[k]]
        c = self.kn_ctx[t]
        H.kernel_neon_begin(self, s, k, False)
        self.write(s, k, c, True)
        if self.hc.kernel_neon_preemptible:
            s[self.pc[t]] = self.L_KNEON
        else:
            H.kernel_neon_end(self, s, k, False)

    def user_sve(self, s: list[int], k: int) -> None:
        t = s[self.cur[k]]
        if not s[self.zen[k]] and not s[self.sm[k]]:  # streaming SVE: SME's, no ZEN trap
            if self.trap_window:
                # el0_sve_acc: the handler is a preemptible kernel path (flow.py); the
                # access is retried once it returns to EL0.
                s[self.pc[t]] = self.L_SVE_TRAP
                return
            H.do_sve_acc(self, s, k, t)
            # The trap returns through ret_to_user, which reloads the state if it
            # was in memory, before the instruction is retried.
            H.fpsimd_restore_current_state(self, s, k, t)
            if self.check_invariants:
                self._check_use(s, k, t, False)  # the retried access reads V0-V31 first
        self.ctr[C.HOST_FP_USES] += 1
        self.write(s, k, t, True)

    def guest_trap(self, s: list[int], k: int, t: int, sve: bool) -> None:
        """A guest FP/SVE access traps to the hypervisor (fast path, IRQs masked)."""
        v = self.vcpu_of[t]
        self.ctr[C.GUEST_FP_TRAPS] += 1
        self.irqs_off = True
        trap = self.policy.hyp_fp_trap
        if trap is None:
            self.violate("no-bug", "guest FP access trapped but the policy has no handler",
                         k, (self.vctx[v],))
        else:
            trap(self, s, k, t, v, sve)
        self.irqs_off = False

    def guest_fp(self, s: list[int], k: int, sve: bool) -> None:
        t = s[self.cur[k]]
        v = self.vcpu_of[t]
        c = self.vctx[v]
        if s[self.gtrap[k]]:
            if s[self.gtrapped[v]]:
                # The handler already gave the guest its registers in this stay.
                self.violate("no-spurious-trap", f"{self.name(c)} traps on FP again without "
                             "an exit since its last FP trap was handled", k, (c,))
            s[self.gtrapped[v]] = 1
            self.guest_trap(s, k, t, sve)
            if self.check_invariants:
                # A real access reads before it writes: the restored state must be
                # the guest's own latest (a write-only event would hide a lost restore).
                self._check_use(s, k, c, self.vcpu_sve[v])
        self.write(s, k, c, sve)

    def _check_use(self, s: list[int], k: int, c: int, hi_matters: bool) -> None:
        if s[self.lo[k]] != s[self.want_lo[c]]:
            self._bad_read(s, k, c, "FPSIMD V0-V31", s[self.lo[k]], s[self.want_lo[c]])
        elif hi_matters:
            got, want = s[self.hi[k]], s[self.want_hi[c]]
            if got != want and not (got == ZERO and s[self.permit[c]]):
                self._bad_read(s, k, c, "SVE Z upper bits/P/FFR", got, want)

    def guest_exit(self, s: list[int], k: int, cls: int) -> None:
        t = s[self.cur[k]]
        v = self.vcpu_of[t]
        s[self.exitcls[v]] = cls
        s[self.gtrapped[v]] = 0
        self.ctr[C.GUEST_EXITS] += 1
        s[self.pc[t]] = self.L_EXIT
        if self.p_chain[self.L_EXIT]:
            self.run_point(s, k, t)

    # -------------------------------------------------------------- invariants

    def readable(self, s: list[int], k: int) -> tuple[int, bool, bool]:
        """Who can read CPU k's registers right now: (context, lo?, hi?)."""
        t = s[self.cur[k]]
        if not t:
            return 0, False, False
        chk = self.p_check[s[self.pc[t]]]
        if chk == CHK_USER:
            if self.hc.arm32_lazy_vfp and not s[self.vfp_en[k]]:
                return 0, False, False  # a VFP access would trap and load first
            # Streaming-mode Z/P registers are SME's (SMEN), not gated by ZEN.
            return t, True, bool(s[self.zen[k]] or s[self.sm[k]])
        if chk == CHK_GUEST:
            if s[self.gtrap[k]]:
                return 0, False, False
            v = self.vcpu_of[t]
            return self.vctx[v], True, self.vcpu_sve[v]
        if chk == CHK_KNEON:
            return self.kn_ctx[t], True, False
        return 0, False, False

    def check_cpu(self, s: list[int], k: int) -> None:
        """Integrity and confidentiality of whoever can read CPU k's registers."""
        for f in self.feats:
            if f.check_cpu is not None:
                f.check_cpu(self, s, k)
        c, lo_ok, hi_ok = self.readable(s, k)
        if not c:
            return
        got = s[self.lo[k]]
        if got != s[self.want_lo[c]]:
            self._bad_read(s, k, c, "FPSIMD V0-V31", got, s[self.want_lo[c]])
            return
        if hi_ok:
            got = s[self.hi[k]]
            want = s[self.want_hi[c]]
            if got != want and not (got == ZERO and s[self.permit[c]]):
                self._bad_read(s, k, c, "SVE Z upper bits/P/FFR", got, want)

    def _bad_read(self, s: list[int], k: int, c: int, bank: str, got: int, want: int,
                  want_field: list[int] | None = None) -> None:
        """Report a wrong read of ``bank``; ``want_field`` is the bank's latest-value
        field (default: the FPSIMD or SVE-upper one, by the bank's name)."""
        owner = got & OWNER_MASK
        who = self.name(c)
        if owner not in (c, 0, GARBAGE):
            self.violate("confidentiality",
                         f"{who} on CPU{k} can read {bank} = {self.tagname(got)}, a value of "
                         f"{self.name(owner)} (its own latest is {self.tagname(want)})",
                         k, (c, owner))
        else:
            self.violate("integrity",
                         f"{who} on CPU{k} reads {bank} = {self.tagname(got)}, not its latest "
                         f"value {self.tagname(want)}", k, (c,))
        # Adopt what was read so one fault is reported once, not at every step.
        if want_field is None:
            want_field = self.want_lo if bank.startswith("FPSIMD") else self.want_hi
        s[want_field[c]] = got

    def exempt(self, s: list[int]) -> set[int]:
        """Contexts whose state is legitimately in flight in this state."""
        out: set[int] = set()
        for k in range(self.ncpu):
            t = s[self.cur[k]]
            if not t:
                continue
            pc = s[self.pc[t]]
            if not self.p_rest[pc]:
                out.add(t)
                out.add(self.kn_ctx[t])
                out.add(self.vctx_of_thread[t])
            elif self.p_kind[pc] == K_GUEST:
                out.add(self.vctx_of_thread[t])
        return out

    def image(self, s: list[int], c: int) -> tuple[int, int]:
        """What a reload of c's saved image would put in (lo, hi)."""
        if s[self.fp_type[c]] == FP_STATE_SVE:
            return s[self.mem_zlo[c]], s[self.mem_hi[c]]
        return s[self.mem_lo[c]], ZERO

    def check_recoverable(self, s: list[int]) -> None:
        """At a quiescent point every context's latest state is somewhere safe.

        Safe means: in its saved image (as a reload would see it), in a policy's
        stash slot, or live on exactly one CPU whose binding names it. Contexts
        in flight (their thread mid-path, a vCPU in the guest) are exempt.
        """
        exempt = self.exempt(s)
        fpt, zlo, mlo, mhi = self.fp_type[0], self.mem_zlo[0], self.mem_lo[0], self.mem_hi[0]
        wlo, whi, tif, per = self.want_lo[0], self.want_hi[0], self.tif_sve[0], self.permit[0]
        bound0, lo0, hi0 = self.bound[0], self.lo[0], self.hi[0]
        cpus = range(self.ncpu)
        fast_live = self.policy.aliases is None
        for c, is_thread, hi_static in self.rec_ctx:
            if c in exempt:
                continue
            want_lo = s[wlo + c]
            if s[fpt + c] == FP_STATE_SVE:
                lo = s[zlo + c]
                hi = s[mhi + c]
            else:
                lo = s[mlo + c]
                hi = ZERO
            want_hi = s[whi + c]
            hi_m = (s[tif + c] or want_hi != ZERO) if is_thread else hi_static
            if lo == want_lo and (not hi_m or hi == want_hi or (hi == ZERO and s[per + c])):
                continue
            if fast_live:
                # The common case: live, and bound on exactly one CPU (no aliases, so
                # this is what the full test would conclude too).
                n = 0
                for k in cpus:
                    if s[bound0 + k] == c and s[lo0 + k] == want_lo and (
                            not hi_m or s[hi0 + k] == want_hi
                            or (s[hi0 + k] == ZERO and s[per + c])) and (
                            not is_thread or self._task_claims(s, c, k)):
                        n += 1
                if n == 1:
                    continue
            if self._recover_slow(s, c, is_thread, hi_static):
                return
        if self.hc.kernel_neon_preemptible:
            for t in range(1, self.nthreads):
                if s[self.kfp[t]]:
                    c = self.kn_ctx[t]
                    if c in exempt:
                        continue
                    k = self.running_on(s, t)
                    if s[mlo + c] == s[wlo + c] or (k >= 0 and s[self.lo[k]] == s[wlo + c]):
                        continue
                    self.violate("recoverability", f"the kernel-mode NEON state of "
                                 f"{self.tname(t)} is lost", k, (c,))
                    return
        for f in self.feats:
            if f.check_state is not None:
                f.check_state(self, s)
        if self.policy.check is not None:
            self.policy.check(self, s)

    def _task_claims(self, s: list[int], t: int, k: int) -> bool:
        """Whether CPU k's binding of task t's state is a claim Linux honours.

        A task skips its reload only where both the binding and its fpsimd_cpu name
        the CPU (fpsimd_thread_switch), so a CPU whose binding names t while t's
        fpsimd_cpu names another CPU (or none) holds a dead copy. The exception is t
        running on k with TIF_FOREIGN_FPSTATE clear: the registers are its own and
        the next fpsimd_save_user_state() saves them whatever fpsimd_cpu says.
        (Task contexts only: KVM binds vCPU states without fpsimd_cpu.)
        """
        return s[self.fcpu[t]] == k or (s[self.cur[k]] == t and not s[self.foreign[t]])

    def _recover_slow(self, s: list[int], c: int, is_thread: bool, hi_static: bool) -> bool:
        """The full recoverability test for one context; True if it reported."""
        want_lo = s[self.want_lo[c]]
        want_hi = s[self.want_hi[c]]
        permit = s[self.permit[c]]
        hi_matters = (bool(s[self.tif_sve[c]]) or want_hi != ZERO) if is_thread else hi_static
        aliases = self.policy.aliases
        areas = (c,) + (aliases(self, s, c) if aliases else ())
        for a in areas:
            lo, hi = self.image(s, a)
            if lo == want_lo and (not hi_matters or hi == want_hi or (hi == ZERO and permit)):
                return False
        # A stash holds the FPSIMD view: enough when the upper bits do not matter or the
        # syscall ABI lets them come back as zero (a V-register load zeroes them).
        if (not hi_matters or permit) and any(s[i] == want_lo for i, is_hi in self.stash_slots
                                              if not is_hi):
            return False
        holders = [k for k in range(self.ncpu)
                   if s[self.bound[k]] in areas and s[self.lo[k]] == want_lo
                   and (not hi_matters or s[self.hi[k]] == want_hi
                        or (s[self.hi[k]] == ZERO and permit))
                   and (s[self.bound[k]] >= self.nthreads
                        or self._task_claims(s, s[self.bound[k]], k))]
        if len(holders) == 1:
            return False
        if self.dedupe_lost:
            key = (c, want_lo, want_hi)
            if key in self.reported_lost:
                return False
            self.reported_lost.add(key)
        if not holders:
            self.violate("recoverability",
                         f"the latest state of {self.name(c)} ({self.tagname(want_lo)}) is "
                         "neither in memory nor live on a CPU bound to it: it is lost",
                         -1, (c,))
        else:
            self.violate("recoverability",
                         f"the latest state of {self.name(c)} is live and bound on "
                         f"CPUs {holders}: two CPUs claim it", holders[0], (c,))
        return True

    def live_contexts(self, s: list[int]) -> Iterable[int]:
        yield from range(1, self.nthreads)
        yield from self.vctx
        if self.hc.kernel_neon_preemptible:
            for t in range(1, self.nthreads):
                if s[self.kfp[t]]:
                    yield self.kn_ctx[t]

    # -------------------------------------------------------------- enabling

    def enabled(self, s: tuple[int, ...] | list[int], features: frozenset[str]) -> list[tuple]:
        """Every action enabled in state s (the checker's successor relation)."""
        out: list[tuple[int, int, int]] = []
        nthreads = self.nthreads
        sirq_on = "softirq-neon" in features
        cur = self.cur
        running = {s[cur[k]] for k in range(self.ncpu)}
        rq0 = self.rq[0]
        for k in range(self.ncpu):
            t = s[self.cur[k]]
            if t == 0:
                kind = K_IDLE
                pc = self.L_IDLE
            else:
                pc = s[self.pc[t]]
                kind = self.p_kind[pc]
            if kind == K_GUEST:
                out.append((GFP, k, 0))
                if self.vcpu_sve[self.vcpu_of[t]] and "guest-sve" in features:
                    out.append((GSVE, k, 0))
                out.append((GEXIT, k, EXIT_KERNEL))
                if "exit-user" in features:
                    out.append((GEXIT, k, EXIT_USER))
                for f in self.feats:
                    if f.enabled is not None:
                        f.enabled(self, s, k, t, pc, kind, out)
                continue
            if kind == K_USER:
                out.append((UFP, k, 0))
                # SVE tasks use SVE; any task may execute an SVE instruction that
                # does not trap (glibc's memmove does, where EL0 SVE is enabled).
                if ("sve" in features and (self.task_sve[t] or s[self.zen[k]])) or s[self.sm[k]]:
                    out.append((USVE, k, 0))
                if self.vcpu_of[t] >= 0:
                    out.append((KVMRUN, k, 0))
                else:
                    out.append((SYSCALL, k, 0))
            elif kind != K_IDLE:
                out.append((STEP, k, 0))
                if pc == self.L_SYS and self.task_kneon[t] and "kernel-neon" in features:
                    out.append((KNEON, k, 0))
            if sirq_on and self.p_sirq[pc]:
                out.append((SIRQ, k, 0))
            for f in self.feats:
                if f.enabled is not None:
                    f.enabled(self, s, k, t, pc, kind, out)
            if self.p_preempt[pc]:
                # A thread at EL0 or inside a kernel-mode NEON section can be preempted
                # by another runnable thread but cannot block (switch to idle).
                can_block = kind != K_USER and pc != self.L_KNEON
                for u in range(nthreads):
                    if u == t:
                        continue
                    if u == 0:
                        if can_block:
                            out.append((SCHED, k, 0))
                    elif s[rq0 + u] == k and u not in running:
                        out.append((SCHED, k, u))
        for f in self.feats:
            if f.enabled_global is not None:
                f.enabled_global(self, s, running, out)
        if "migration" in features and self.ncpu > 1:
            for u in range(1, nthreads):
                # (runqueue NO_CPU: a free task slot of feature "fork", not a thread)
                if u not in running and s[self.rq[u]] != NO_CPU:
                    for d in range(self.ncpu):
                        if d != s[self.rq[u]]:
                            out.append((MIGRATE, u, d))
        return out

    def _running(self, s, u: int) -> bool:
        cur = self.cur
        return any(s[cur[k]] == u for k in range(self.ncpu))

    # -------------------------------------------------------------- utilities

    def new_state(self) -> list[int]:
        return list(self.init_state)

    def running_on(self, s, t: int) -> int:
        for k in range(self.ncpu):
            if s[self.cur[k]] == t:
                return k
        return -1

    def point_name(self, pc: int) -> str:
        p = self.prog.points[pc]
        return f"{p.hook}: {p.name}" if p.hook else p.name

    def action_text(self, s, a: tuple[int, int, int]) -> str:
        kind, x, y = a
        if kind in self.ext_actions:
            return self.ext_actions[kind].text(self, s, a)
        if kind == MIGRATE:
            return f"migrate {self.tname(x)} to CPU{y}"
        t = s[self.cur[x]]
        who = self.tname(t)
        if kind == STEP:
            return f"{who}: {self.point_name(s[self.pc[t]])}"
        if kind == SCHED:
            return f"switch {who} -> {self.tname(y)}"
        if kind == SIRQ:
            return f"softirq kernel-mode NEON (interrupting {who})"
        if kind == GEXIT:
            return f"{who}: guest exit ({'to the VMM' if y == EXIT_USER else 'handled in kernel'})"
        v = self.vcpu_of[t]
        vname = self.name(self.vctx[v]) if v >= 0 else who
        if kind == USVE and self.trap_window and not s[self.zen[x]] and not s[self.sm[x]]:
            return f"{who}: SVE access at EL0 traps (el0_sve_acc)"
        return {
            UFP: f"{who} writes FPSIMD at EL0",
            USVE: f"{who} writes SVE at EL0",
            SYSCALL: f"{who}: syscall",
            KVMRUN: f"{who}: ioctl(KVM_RUN)",
            KNEON: f"{who}: kernel_neon_begin() in a syscall",
            GFP: f"{vname}: guest writes FPSIMD",
            GSVE: f"{vname}: guest writes SVE",
            READ: f"{who}: reads its registers",
        }.get(kind, ACTION_NAMES[kind])


__all__ = [
    "Model", "Violation", "STEP", "SCHED", "MIGRATE", "SIRQ", "UFP", "USVE", "SYSCALL",
    "KVMRUN", "KNEON", "GFP", "GSVE", "GEXIT", "READ", "ACTION_NAMES", "K_REST",
    "CHK_NONE", "TAG_LO", "TAG_HI", "REF_CTX", "REF_CPU", "REF_THREAD",
]
