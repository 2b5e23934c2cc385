"""Real KVM/arm64 under QEMU: count the guest's FP traps and compare with kvmctx.

The pipeline (shared/reference/real-kvm.md has the facts it rests on):

1. Set-up, cached under ``$KVMCTX_CACHE`` (default ``~/.cache/kvmctx``):
   Debian's qemu-system-arm, the aarch64 cross compiler and cpio; the arm64
   kernel packages (``linux-image-arm64`` = the 6.1 series,
   ``linux-image-6.12-arm64``) and busybox-static, downloaded with
   ``apt-get download`` and unpacked, never installed; our VMM
   (``vmm.c``), guest (``guest.S``) and competing host task (``fpburn.c``)
   cross-compiled static.
2. One boot per (kernel, mode) runs every scenario in sequence from an
   initramfs; each scenario runs with ftrace on (kvm_entry, kvm_exit,
   kvm_userspace_exit, sched_switch, sched_migrate_task, softirq_entry) and
   prints its trace on the console. The VMM checks the FP result the guest
   sends with every exit: any corruption fails the run.
3. Real traps: the emulator's exception log (``-d int``), parsed per
   exception block (interrupt blocks carry a stale syndrome and are
   skipped): exceptions from EL1 to EL2 with EC 0x07 (FP/ASIMD) or 0x19
   (SVE) whose return address is in the guest's code, between the guest's
   window markers (``hvc #0x4b56`` ... ``hvc #0x4b57``) of that scenario.
4. Prediction: the captured trace replayed through kvmctx
   (``api.run_trace``) with the policy matching the kernel, the guest's FP
   use per run segment taken from the scenario's definition (which
   iterations use FP, and the exits that split them), host threads using FP
   only where the scenario runs the competing FP task.

Policies: Debian's 6.1.192 and 6.12.117 both carry the 2025 backports
"KVM: arm64: Unconditionally save+flush host FPSIMD/SVE/SME state",
"Remove host FPSIMD saving for non-protected KVM" and "Eagerly switch
ZCR_EL{1,2}" (their changelogs), so their VHE and nVHE flows are
``upstream-6.14``; protected mode is ``pkvm``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

GUEST_BASE = 0x40000000
GUEST_END = 0x40200000
MARK_START = 0x4B56
MARK_END = 0x4B57
EC_FP, EC_SVE, EC_HVC = 0x07, 0x19, 0x16
KERNELS = {"6.1": "linux-image-arm64", "6.12": "linux-image-6.12-arm64"}
MODES = {"vhe": "", "nvhe": "kvm-arm.mode=nvhe", "protected": "kvm-arm.mode=protected"}
# What the kernel prints once KVM is up in each mode ("kvm [1]: ... initialized
# successfully"): checked, so a mode the kernel fell back from is not reported as run.
MODE_INIT = {"vhe": r": VHE mode", "nvhe": r": Hyp (?:[nh]VHE )?mode",
             "protected": r": Protected [nh]VHE mode"}
POLICY_FOR_MODE = {"vhe": "upstream-6.14", "nvhe": "upstream-6.14", "protected": "pkvm"}
# pKVM's hyp-side handling of a normal VM's FP state (host state saved in hyp,
# the guest's synced back at every return to the host: fpsimd_sve_sync) is from
# v6.10; before it protected mode runs a normal VM's FP like nVHE.
PKVM_FP_SINCE = (6, 10)


def policy_for(version: str, mode: str) -> str:
    if mode != "protected":
        return POLICY_FOR_MODE[mode]
    m = re.match(r"(\d+)\.(\d+)", version)
    if m and (int(m.group(1)), int(m.group(2))) < PKVM_FP_SINCE:
        return "upstream-6.14"
    return "pkvm"
HOST_DEBS = ("qemu-system-arm", "gcc-aarch64-linux-gnu", "binutils-aarch64-linux-gnu",
             "libc6-dev-arm64-cross", "cpio")
HOST_TOOLS = ("qemu-system-aarch64", "aarch64-linux-gnu-gcc", "aarch64-linux-gnu-as",
              "aarch64-linux-gnu-objcopy", "aarch64-linux-gnu-nm", "cpio", "dpkg-deb")


class ValidationError(RuntimeError):
    """Set-up or a run failed: one line saying what and how to fix it."""


@dataclass(frozen=True)
class Scenario:
    name: str
    guest: int            # guest.S scenario number
    iters: int
    vcpus: int = 1
    sve: bool = False
    competitor: bool = False   # fpburn on CPU0 for the run's duration
    pinned: bool = True        # VMM pinned to CPU0 (else free to migrate)
    description: str = ""
    deterministic: bool = True


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("fp-every-exit", 0, 40, description="FP work before every exit to the VMM"),
    Scenario("fp-every-other", 1, 40, description="FP work on every other exit"),
    Scenario("no-fp", 2, 40, description="integer work only"),
    Scenario("sve", 3, 40, sve=True, description="an SVE vCPU using SVE before every exit"),
    Scenario("fp-long-irq", 4, 6, description="long FP loops interrupted by timer IRQ exits "
             "handled in the kernel", deterministic=False),
    Scenario("fp-preempt", 4, 6, competitor=True, description="long FP loops with a "
             "competing FP task on the same CPU (preemption)", deterministic=False),
    Scenario("two-vcpu-migrate", 0, 60, vcpus=2, competitor=True, pinned=False,
             description="two vCPU threads, free to migrate, an FP task competing on CPU0",
             deterministic=False),
)}
QUICK = ("fp-every-exit", "fp-every-other", "no-fp")


def cache_dir() -> Path:
    base = os.environ.get("KVMCTX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kvmctx")
    d = Path(base) / "validation"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _run(cmd: list[str], what: str, cwd: Path | None = None, timeout: int = 900) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    except FileNotFoundError:
        raise ValidationError(f"{what}: {cmd[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise ValidationError(f"{what}: timed out after {timeout} s") from None
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or [""])[-1]
        raise ValidationError(f"{what} failed ({' '.join(cmd[:3])}...): {last}")
    return p.stdout


# ------------------------------------------------------------------ set-up


def ensure_host_tools(say: Any) -> None:
    missing = [t for t in HOST_TOOLS if shutil.which(t) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ValidationError(f"missing {', '.join(missing)}; install the Debian packages "
                              f"{' '.join(HOST_DEBS)} (as root: apt-get install -y ...)")
    say(f"installing {' '.join(HOST_DEBS)} (apt-get)")
    try:
        _run(["apt-get", "install", "-y", "--no-install-recommends", *HOST_DEBS],
             "apt-get install", timeout=1800)
    except ValidationError:
        _run(["apt-get", "update"], "apt-get update", timeout=1800)   # stale lists
        _run(["apt-get", "install", "-y", "--no-install-recommends", *HOST_DEBS],
             "apt-get install", timeout=1800)
    still = [t for t in HOST_TOOLS if shutil.which(t) is None]
    if still:
        raise ValidationError(f"still missing after apt-get: {', '.join(still)}")


def _ensure_arm64_arch(say: Any) -> None:
    arches = _run(["dpkg", "--print-foreign-architectures"], "dpkg").split()
    if "arm64" in arches:
        return
    if os.geteuid() != 0:
        raise ValidationError("arm64 packages need `dpkg --add-architecture arm64 && "
                              "apt-get update` (as root)")
    say("adding the arm64 architecture to apt")
    _run(["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture")
    _run(["apt-get", "update"], "apt-get update", timeout=1800)


def _resolve(meta: str) -> str:
    out = _run(["apt-cache", "depends", f"{meta}:arm64"], f"apt-cache depends {meta}")
    m = re.search(r"Depends:\s*(linux-image-[^\s:]+)", out)
    if not m:
        raise ValidationError(f"cannot resolve {meta}:arm64 to a kernel package")
    return m.group(1)


def _download(pkg: str, dest: Path, say: Any) -> Path:
    found = sorted(dest.glob(f"{pkg.split(':')[0]}_*.deb"))
    if found:
        return found[-1]
    say(f"downloading {pkg}:arm64")
    _run(["apt-get", "download", f"{pkg}:arm64"], f"apt-get download {pkg}", cwd=dest,
         timeout=1800)
    found = sorted(dest.glob(f"{pkg.split(':')[0]}_*.deb"))
    if not found:
        raise ValidationError(f"apt-get download {pkg}:arm64 produced no .deb")
    return found[-1]


def _unpack(deb: Path, dest: Path) -> Path:
    root = dest / (deb.stem + ".root")
    if not root.exists():
        tmp = Path(tempfile.mkdtemp(dir=dest))
        _run(["dpkg-deb", "-x", str(deb), str(tmp)], f"dpkg-deb -x {deb.name}")
        tmp.rename(root)
    return root


@dataclass
class Kernel:
    image: Path
    version: str
    changelog: str = ""


def ensure_kernel(spec: str, say: Any) -> Kernel:
    d = cache_dir()
    p = Path(spec)
    if spec not in KERNELS:
        if not p.exists():
            raise ValidationError(f"--kernel {spec}: not 6.1, 6.12 or an existing Image/.deb")
        if p.suffix == ".deb":
            root = _unpack(p.resolve(), d)
            imgs = sorted((root / "boot").glob("vmlinuz-*"))
            if not imgs:
                raise ValidationError(f"{p}: no /boot/vmlinuz-* inside")
            return Kernel(imgs[-1], imgs[-1].name.removeprefix("vmlinuz-"))
        return Kernel(p.resolve(), p.name)
    _ensure_arm64_arch(say)
    pkg = _resolve(KERNELS[spec])
    root = _unpack(_download(pkg, d, say), d)
    imgs = sorted((root / "boot").glob("vmlinuz-*"))
    if not imgs:
        raise ValidationError(f"{pkg}: no /boot/vmlinuz-* inside")
    changelog = ""
    for cl in root.glob("usr/share/doc/*/changelog*.gz"):
        with gzip.open(cl, "rt", errors="replace") as f:
            changelog = f.read()
    return Kernel(imgs[-1], imgs[-1].name.removeprefix("vmlinuz-"), changelog)


def ensure_busybox(say: Any) -> Path:
    d = cache_dir()
    _ensure_arm64_arch(say)
    root = _unpack(_download("busybox-static", d, say), d)
    bb = root / "bin" / "busybox"
    if not bb.exists():
        raise ValidationError("busybox-static:arm64 has no /bin/busybox")
    return bb


def build_programs(say: Any) -> dict[str, Path]:
    """vmm, fpburn (static aarch64) and guest.bin, rebuilt when their sources change."""
    srcs = {n: resources.files("kvmctx.validation").joinpath(n).read_bytes()
            for n in ("vmm.c", "guest.S", "fpburn.c")}
    h = hashlib.sha256(b"".join(srcs[n] for n in sorted(srcs))).hexdigest()[:12]
    out = cache_dir() / f"build-{h}"
    want = {"vmm": out / "vmm", "fpburn": out / "fpburn", "guest": out / "guest.bin",
            "syms": out / "guest.syms"}
    if all(p.exists() for p in want.values()):
        return want
    say("cross-compiling the VMM, the guest and the FP task")
    tmp = Path(tempfile.mkdtemp(dir=cache_dir()))
    for n, b in srcs.items():
        (tmp / n).write_bytes(b)
    cc = "aarch64-linux-gnu-gcc"
    _run([cc, "-O2", "-static", "-pthread", "-o", "vmm", "vmm.c"], "building vmm", tmp)
    _run([cc, "-O2", "-static", "-o", "fpburn", "fpburn.c"], "building fpburn", tmp)
    _run(["aarch64-linux-gnu-as", "-march=armv8.2-a+sve", "-o", "guest.o", "guest.S"],
         "assembling the guest", tmp)
    _run(["aarch64-linux-gnu-ld", f"-Ttext={GUEST_BASE:#x}", "-o", "guest.elf", "guest.o"],
         "linking the guest", tmp)
    _run(["aarch64-linux-gnu-objcopy", "-O", "binary", "guest.elf", "guest.bin"],
         "objcopy guest", tmp)
    nm = _run(["aarch64-linux-gnu-nm", "guest.elf"], "nm guest", tmp)
    (tmp / "guest.syms").write_text(nm)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return want


# ------------------------------------------------------------------ boot


def init_script(scenarios: list[Scenario]) -> str:
    lines = [
        "#!/bin/busybox sh",
        "/bin/busybox --install -s /bin",
        "mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev",
        "mount -t tracefs nodev /sys/kernel/tracing",
        "T=/sys/kernel/tracing",
        "echo 16384 > $T/buffer_size_kb",
        "for e in kvm/kvm_entry kvm/kvm_exit kvm/kvm_userspace_exit sched/sched_switch "
        "sched/sched_migrate_task irq/softirq_entry; do echo 1 > $T/events/$e/enable; done",
        # The whole init line: 6.1 says "Hyp mode" (nVHE) or "Protected nVHE mode",
        # 6.12 "Hyp nVHE mode"; one word before "mode" missed the last two.
        "echo \"@@KVM $(ls /dev/kvm 2>&1) $(dmesg | grep -o 'kvm \\[[0-9]*\\]: "
        "[A-Za-z() ]*mode[A-Za-z() ]* initialized' | head -1)\"",
    ]
    for sc in scenarios:
        vmm = f"/vmm /guest.bin {sc.guest} {sc.iters} {sc.vcpus} {int(sc.sve)}"
        if sc.pinned:
            vmm = "taskset -c 0 " + vmm
        lines += [
            f"echo '@@BEGIN {sc.name}'",
            "echo > $T/trace; echo 1 > $T/tracing_on",
        ]
        if sc.competitor:
            lines.append("taskset -c 0 /fpburn 4 > /dev/null &")
            lines.append("sleep 0.2")
        lines += [
            f"timeout 600 {vmm}",
            "echo \"@@RC $?\"",
            "wait",
            "echo 0 > $T/tracing_on",
            "echo '@@TRACE-BEGIN'; cat $T/trace; echo '@@TRACE-END'",
            f"echo '@@END {sc.name}'",
        ]
    lines.append("poweroff -f")
    return "\n".join(lines) + "\n"


def make_initrd(progs: dict[str, Path], busybox: Path, scenarios: list[Scenario],
                work: Path) -> Path:
    root = work / "initrd"
    for sub in ("bin", "proc", "sys", "dev", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    shutil.copy(progs["vmm"], root / "vmm")
    shutil.copy(progs["fpburn"], root / "fpburn")
    shutil.copy(progs["guest"], root / "guest.bin")
    (root / "init").write_text(init_script(scenarios))
    (root / "init").chmod(0o755)
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, text=True,
                           check=True).stdout
    cpio = subprocess.run(["cpio", "-o", "-H", "newc"], cwd=root, input=files.encode(),
                          capture_output=True, check=True).stdout
    out = work / "initrd.cpio.gz"
    out.write_bytes(gzip.compress(cpio, 6))
    return out


def boot(kernel: Kernel, initrd: Path, mode: str, work: Path, timeout: int = 1800
         ) -> tuple[str, Path]:
    log = work / "qemu-int.log"
    append = "console=ttyAMA0 panic=-1 quiet " + MODES[mode]
    # -no-reboot: a kernel panic (panic=-1) ends QEMU; without it the machine booted
    # again and ran every scenario a second time into the same console and log.
    cmd = ["qemu-system-aarch64", "-M", "virt,virtualization=on,gic-version=3", "-cpu", "max",
           "-m", "1024", "-smp", "2", "-nographic", "-nic", "none", "-no-reboot",
           "-kernel", str(kernel.image), "-initrd", str(initrd), "-append", append.strip(),
           "-d", "int", "-D", str(log)]
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ValidationError(f"QEMU did not finish in {timeout} s") from None
    serial = p.stdout.decode("utf-8", "replace").replace("\r", "")
    return serial, log


# ------------------------------------------------------------------ parsing


@dataclass
class RealRun:
    name: str
    rc: int = -1
    vmm: list[str] = field(default_factory=list)
    trace: str = ""


def parse_serial(serial: str) -> tuple[str, dict[str, RealRun]]:
    kvm = ""
    runs: dict[str, RealRun] = {}
    cur: RealRun | None = None
    in_trace = False
    tlines: list[str] = []
    for line in serial.splitlines():
        if line.startswith("@@KVM"):
            kvm = line[5:].strip()
        elif line.startswith("@@BEGIN "):
            cur = runs.setdefault(line[8:].strip(), RealRun(line[8:].strip()))
        elif cur is None:
            continue
        elif line.startswith("@@RC "):
            try:
                cur.rc = int(line[5:].strip())
            except ValueError:
                cur.rc = -1
        elif line == "@@TRACE-BEGIN":
            in_trace, tlines = True, []
        elif line == "@@TRACE-END":
            in_trace = False
            cur.trace = "\n".join(tlines) + "\n"
        elif line.startswith("@@END "):
            cur = None
        elif in_trace:
            tlines.append(line)
        elif line.startswith("vcpu ") or "corrupted" in line or "exception" in line \
                or "Kernel panic" in line:
            cur.vmm.append(line.strip())
    return kvm, runs


_BLOCK = re.compile(r"^Taking exception \d+ \[([^\]]+)\]")
_FROM = re.compile(r"^\.\.\.from EL(\d) to EL(\d)")
_ESR = re.compile(r"^\.\.\.with ESR 0x([0-9a-f]+)/0x([0-9a-f]+)")
_ELR = re.compile(r"^\.\.\.with ELR 0x([0-9a-f]+)")


def exceptions(log: Path) -> list[tuple[str, int, int, int, int]]:
    """(type, from EL, to EL, ESR, ELR) of every exception block, in log order."""
    out = []
    kind = ""
    frm = to = esr = elr = -1

    def flush() -> None:
        if kind:
            out.append((kind, frm, to, esr, elr))

    with open(log, errors="replace") as f:
        for line in f:
            m = _BLOCK.match(line)
            if m:
                flush()
                kind, frm, to, esr, elr = m.group(1), -1, -1, -1, -1
                continue
            if not kind:
                continue
            if (m := _FROM.match(line)):
                frm, to = int(m.group(1)), int(m.group(2))
            elif (m := _ESR.match(line)):
                esr = int(m.group(2), 16)
            elif (m := _ELR.match(line)):
                elr = int(m.group(1), 16)
        flush()
    return out


def count_traps(excs: list[tuple[str, int, int, int, int]], scenarios: list[Scenario]
                ) -> dict[str, dict[str, int]]:
    """Guest FP/SVE traps to EL2 inside each scenario's marker window, in order."""
    res: dict[str, dict[str, int]] = {}
    i = 0
    n = len(excs)
    for sc in scenarios:
        starts = ends = 0
        fp = sve = 0
        # advance to this scenario's first start marker
        while i < n:
            kind, frm, to, esr, elr = excs[i]
            if kind == "Hypervisor Call" and frm == 1 and esr >> 26 == EC_HVC \
                    and esr & 0xFFFF == MARK_START:
                break
            i += 1
        seen_start_at = i
        while i < n:
            kind, frm, to, esr, elr = excs[i]
            i += 1
            if kind in ("IRQ", "FIQ") or frm != 1 or to != 2 or esr < 0:
                continue
            ec = esr >> 26
            if ec == EC_HVC and esr & 0xFFFF == MARK_START:
                starts += 1
            elif ec == EC_HVC and esr & 0xFFFF == MARK_END:
                ends += 1
                if ends >= sc.vcpus:
                    break
            elif ec in (EC_FP, EC_SVE) and GUEST_BASE <= elr < GUEST_END and starts:
                if ec == EC_FP:
                    fp += 1
                else:
                    sve += 1
        res[sc.name] = {"fp": fp, "sve": sve, "starts": starts, "ends": ends,
                        "window_found": int(seen_start_at < n and ends >= sc.vcpus)}
    return res


# ------------------------------------------------------------------ prediction


def load_syms(path: Path) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            out[parts[2]] = int(parts[0], 16) & 0xFFFFFFFF
    return out


def _block(sc: Scenario, sym: dict[str, int]) -> tuple[int, int]:
    """[first FP/SVE instruction, end of the last one) of the scenario's block."""
    lo, hi = {0: ("fp", "fp_end"), 1: ("fp", "fp_end"), 3: ("sve", "sve_end"),
              4: ("longfp", "longfp_end")}.get(sc.guest, ("report", "report"))
    return sym[lo], sym[hi]


def _before_block(sc: Scenario, pc: int, sym: dict[str, int]) -> bool:
    """pc is on the iteration's path before its FP block: the loop head (or the
    loop-back after the previous iteration's store), or scenario 1's parity test."""
    head = sym["loop"] <= pc < sym["fp"] or sym["report"] < pc < sym.get("done", pc + 1)
    return head or (sc.guest == 1 and sym["every_other"] <= pc < sym["nofp"])


def _segment_uses_fp(sc: Scenario, start: int, end: int, at_store: bool,
                     sym: dict[str, int], irq: bool = False) -> bool:
    """Did a run segment from guest PC ``start`` to the exit at ``end`` (the next
    instruction, or the MMIO store) touch FP/SVE, trapping if it was trapped?

    An IRQ exit reported *at* the block's first FP/SVE instruction, by a segment
    that reached it from before the block, counts: the instruction trapped, the
    hypervisor loaded the guest's FP state, and the interrupt that became pending
    meanwhile was taken before the instruction retired (docs/validation.md)."""
    lo, hi = _block(sc, sym)
    began_before = _before_block(sc, start, sym) or lo <= start < hi
    got_past = at_store or lo < end <= sym["report"]
    trapped_at_first = irq and end == lo and _before_block(sc, start, sym)
    return began_before and (got_past or trapped_at_first)


def fp_plan(tw: Any, sc: Scenario, sym: dict[str, int]) -> dict[int, list[tuple[bool, bool]]]:
    """The guest's FP use per run segment: from the scenario's definition (which
    iterations use FP) and where each exit left the guest (the PC in kvm_exit), so
    an IRQ exit between two FP instructions counts, one after the last does not."""
    from kvmctx.io import trace as T

    plan: dict[int, list[tuple[bool, bool]]] = {}
    vth = {th.pid: th.vcpu for th in tw.vcpu_threads()}
    state: dict[int, dict[str, Any]] = {}
    for _ts, _c, kind, pid, a, b, c in tw.iter_events():
        if kind != T.K_EXIT or pid not in vth:
            continue
        v = vth[pid]
        st = state.setdefault(v, {"it": -1, "resume": sym["_start"]})
        segs = plan.setdefault(v, [])
        # The segment that just ended started at st["resume"] in iteration st["it"].
        it = st["it"]
        uses = False
        pc = a
        if 0 <= it < sc.iters:
            on = (sc.guest in (0, 3, 4)) or (sc.guest == 1 and it % 2 == 1)
            at_store = b == 0x24 and pc == sym["report"]
            uses = on and _segment_uses_fp(sc, st["resume"], pc, at_store, sym, irq=c == 0)
        segs.append((uses, sc.sve))
        # Where the next segment starts: a trapped instruction is stepped over, an
        # interrupted one re-executed.
        nxt = pc if c == 0 else pc + 4   # c: exit type index (0 = IRQ)
        if b == EC_HVC and pc == sym.get("loop", 0) - 4:
            it = 0                        # the start marker: iteration 0 follows
        elif b == 0x24 and c != 0 and it >= 0 and pc == sym["report"]:
            it += 1                       # the iteration's MMIO store: next iteration
        elif b == EC_HVC and it < 0:
            it = 0
        st["it"], st["resume"] = it, nxt
    return plan


def validation_workload(sc: Scenario) -> Any:
    from kvmctx.workloads.workload import HostTask, Vcpu, Workload

    host_fp = 1.0 if sc.competitor else 0.0
    return Workload(cpus=2, tasks=(HostTask("host", fp=host_fp, syscall=0.0),),
                    vcpus=(Vcpu("vcpu0", sve=sc.sve, vl=128 if not sc.sve else 512),),
                    guest_fp=0.0, softirq_neon=0.0, vmm_fp=0.0, migrate=0.0, preempt=0.0)


def predict(sc: Scenario, trace_text: str, policy: str, work: Path, sym: dict[str, int]
            ) -> dict[str, Any]:
    from kvmctx import api
    from kvmctx.io import trace as T

    path = work / f"{sc.name}.trace.txt"
    path.write_text(trace_text)
    try:
        tw = T.parse_file(path)
    except T.TraceFormatError as e:
        return {"error": str(e)}
    plan = fp_plan(tw, sc, sym)
    r = api.run_trace(tw, policy, seed=0, scenario=validation_workload(sc), fp_plan=plan,
                      knobs={})
    c = r.counters
    return {"traps": c["guest_fp_traps"], "exits": c["guest_exits"],
            "segments_fp": r.sim.segments_fp, "violations": r.metrics()["violations"],
            "trace_events": tw.events, "repairs": r.as_json()["trace"]["repairs"]}


# ------------------------------------------------------------------ top level


@dataclass
class Row:
    scenario: str
    kernel: str
    mode: str
    policy: str
    real: int | None
    predicted: int | None
    error_pct: float | None
    status: str
    detail: str = ""
    deterministic: bool = True

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def validate(kernel: str = "6.1", modes: list[str] | None = None,
             scenarios: list[str] | None = None, keep: Path | None = None,
             say: Any = None) -> list[Row]:
    say = say or (lambda _m: None)
    modes = modes or ["vhe"]
    names = scenarios or list(SCENARIOS)
    for n in names:
        if n not in SCENARIOS:
            raise ValidationError(f"unknown scenario {n!r}; valid: {', '.join(SCENARIOS)}")
    for m in modes:
        if m not in MODES:
            raise ValidationError(f"unknown mode {m!r}; valid: {', '.join(MODES)}")
    scs = [SCENARIOS[n] for n in names]
    ensure_host_tools(say)
    k = ensure_kernel(kernel, say)
    bb = ensure_busybox(say)
    progs = build_programs(say)
    sym = load_syms(progs["syms"])
    rows: list[Row] = []
    for mode in modes:
        work = Path(tempfile.mkdtemp(prefix=f"kvmctx-val-{mode}-"))
        initrd = make_initrd(progs, bb, scs, work)
        say(f"booting {k.version} ({mode}) under QEMU with {len(scs)} scenario(s)")
        t0 = time.time()
        serial, log = boot(k, initrd, mode, work)
        say(f"boot and runs took {time.time() - t0:.0f} s; counting traps")
        kvm, runs = parse_serial(serial)
        if "/dev/kvm" not in kvm or "No such file" in kvm:
            raise ValidationError(f"{k.version} ({mode}): /dev/kvm did not appear in the "
                                  f"emulated machine ({kvm or 'no output'})")
        if not re.search(MODE_INIT[mode], kvm):
            raise ValidationError(f"{k.version} ({mode}): KVM did not come up in {mode} mode "
                                  f"(console: {kvm or 'no KVM init line'}); check the kernel's "
                                  f"kvm-arm.mode support")
        counts = count_traps(exceptions(log), scs)
        policy = policy_for(k.version, mode)
        for sc in scs:
            run = runs.get(sc.name)
            cnt = counts.get(sc.name, {})
            if run is None or run.rc != 0:
                why = "; ".join(run.vmm) if run else "no output (did the boot finish?)"
                rows.append(Row(sc.name, k.version, mode, policy, None, None, None, "FAIL",
                                f"VMM rc={run.rc if run else '?'}: {why}", sc.deterministic))
                continue
            if not cnt.get("window_found"):
                rows.append(Row(sc.name, k.version, mode, policy, None, None, None, "FAIL",
                                "marker window not found in the exception log",
                                sc.deterministic))
                continue
            real = cnt["fp"] + cnt["sve"]
            pred = predict(sc, run.trace, policy, work, sym)
            if "error" in pred:
                rows.append(Row(sc.name, k.version, mode, policy, real, None, None, "FAIL",
                                pred["error"], sc.deterministic))
                continue
            p = pred["traps"]
            err = 0.0 if real == p else (100.0 * abs(p - real) / real if real else 100.0)
            ok = (real == p) if sc.deterministic else err <= 5.0
            detail = (f"real FP {cnt['fp']} SVE {cnt['sve']}; model exits "
                      f"{pred['exits']}, FP segments {pred['segments_fp']}, "
                      f"violations {pred['violations']}")
            rows.append(Row(sc.name, k.version, mode, policy, real, p, round(err, 2),
                            "ok" if ok and not pred["violations"] else "MISMATCH", detail,
                            sc.deterministic))
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for sc in scs:
                src = work / f"{sc.name}.trace.txt"
                if src.exists():
                    shutil.copy(src, keep / f"{k.version}-{mode}-{sc.name}.trace.txt")
            shutil.copy(log, keep / f"{k.version}-{mode}-qemu-int.log")
            (keep / f"{k.version}-{mode}-serial.txt").write_text(serial)
        shutil.rmtree(work, ignore_errors=True)
    return rows
