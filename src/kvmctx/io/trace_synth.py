"""Synthetic traces in the real `trace-cmd report` text format.

For tests, fuzzing corpora, benchmarks and trying the importer without a
capture: a VM (QEMU or kvmtool naming) whose vCPU threads run guest
segments, exit with a realistic mix of reasons, go out to the VMM on MMIO,
block on WFx, share CPUs with host threads, migrate, and see softirqs. The
lines are formatted exactly as ``trace-cmd report`` prints the events listed
in shared/reference/traces.md, merged across CPUs in time order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

# (reason, EC, exit type, share) — roughly the default scenario's mix.
EXITS = (("WFx", 0x01, "TRAP", 0.30), ("SYS64", 0x18, "TRAP", 0.20),
         ("DABT_LOW", 0x24, "TRAP", 0.32), ("UNKNOWN", 0x00, "IRQ", 0.12),
         ("HVC64", 0x16, "TRAP", 0.06))


def _vcpu_name(style: str, i: int) -> str:
    return f"CPU {i}/KVM" if style == "qemu" else f"kvm-vcpu-{i}"


def synth_lines(events: int = 1000, cpus: int = 2, vcpus: int = 2, seed: int = 0,
                style: str = "qemu", mmio_user: float = 0.5, header: bool = True
                ) -> Iterator[str]:
    """Yield about ``events`` trace lines (without newlines)."""
    rng = random.Random(seed)
    base_pid = 2046 if style == "qemu" else 88776
    vmm_pid = base_pid - 6
    hosts = [(f"kworker/{k}:1", 300 + k) for k in range(cpus)]
    names = {base_pid + i: _vcpu_name(style, i) for i in range(vcpus)}
    names[0] = "swapper"
    for n, p in hosts:
        names[p] = n
    names[vmm_pid] = "qemu-system-aar" if style == "qemu" else "lkvm"
    # Per-CPU state: what runs, and whether a vCPU is in the guest.
    cur = [0] * cpus
    in_guest = [False] * cpus
    home = {base_pid + i: i % cpus for i in range(vcpus)}
    waiting = list(home)          # vCPU threads not running
    t = 1000.0 + rng.random() * 1000
    if header:
        yield "version = 6"
        yield f"cpus={cpus}"

    def line(pid: int, cpu: int, flags: str, ev: str, fields: str) -> str:
        comm = "<idle>" if pid == 0 else names[pid]
        return f"{comm:>16}-{pid:<7} [{cpu:03d}] {flags} {t:.6f}: {ev}: {fields}"

    def comm_of(pid: int, cpu: int) -> str:
        return f"swapper/{cpu}" if pid == 0 else names[pid]

    def switch(cpu: int, nxt: int, state: str) -> str:
        prev = cur[cpu]
        cur[cpu] = nxt
        return line(prev, cpu, "d..2.", "sched_switch",
                    f"prev_comm={comm_of(prev, cpu)} prev_pid={prev} prev_prio=120 "
                    f"prev_state={state} ==> next_comm={comm_of(nxt, cpu)} next_pid={nxt} "
                    "next_prio=120")

    weights = [e[3] for e in EXITS]
    n = 0
    while n < events:
        t += rng.expovariate(1 / 40e-6)
        k = rng.randrange(cpus)
        p = cur[k]
        if p in home:
            if not in_guest[k]:
                in_guest[k] = True
                pc = rng.getrandbits(32) | 0xffff800080000000
                yield line(p, k, "d..1.", "kvm_entry", f"PC: 0x{pc:016x}")
                n += 1
                continue
            reason, ec, typ, _ = rng.choices(EXITS, weights)[0]
            in_guest[k] = False
            yield line(p, k, "d..1.", "kvm_exit",
                       f"{typ}: HSR_EC: 0x{ec:04x} ({reason}), PC: 0x{0xffff800080528a6c:016x}")
            n += 1
            if reason == "DABT_LOW" and rng.random() < mmio_user:
                t += 3e-6
                yield line(p, k, ".....", "kvm_userspace_exit", "reason KVM_EXIT_MMIO (6)")
                n += 1
            elif reason == "WFx" and rng.random() < 0.8:
                t += 2e-6
                yield switch(k, 0, "S")
                waiting.append(p)
                n += 1
            elif typ == "IRQ" and rng.random() < 0.5:
                t += 1e-6
                yield line(0, k, "..s1.", "softirq_entry", "vec=3 [action=NET_RX]")
                n += 1
            elif typ == "IRQ" and rng.random() < 0.2:
                host = hosts[k][1]
                yield switch(k, host, "R+")
                waiting.append(p)
                n += 1
            continue
        # Idle or host thread on CPU k: run a waiting vCPU (maybe migrating it), or idle.
        cands = [v for v in waiting if home[v] == k]
        if not cands and waiting and rng.random() < 0.3:
            v = rng.choice(waiting)
            yield line(cur[k], k, "d..2.", "sched_migrate_task",
                       f"comm={names[v]} pid={v} prio=120 orig_cpu={home[v]} dest_cpu={k}")
            home[v] = k
            n += 1
            cands = [v]
        if cands:
            v = cands[0]
            waiting.remove(v)
            yield switch(k, v, "R" if p == 0 else "S")
        elif p == 0 and rng.random() < 0.2:
            yield switch(k, hosts[k][1], "R")
        elif p != 0:
            yield switch(k, 0, "S")
        else:
            yield line(0, k, "..s1.", "softirq_entry", "vec=1 [action=TIMER]")
        n += 1


def write_synth(path: str, **kw: object) -> int:
    """Write a synthetic trace file; returns the number of lines."""
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for ln in synth_lines(**kw):  # type: ignore[arg-type]
            f.write(ln + "\n")
            count += 1
    return count
