"""Reading real traces: `trace-cmd report` / tracefs text into a workload.

A line looks like ``TASK-PID [CPU] FLAGS TIMESTAMP: EVENT: FIELDS``. TASK may
contain spaces and dashes ("CPU 0/KVM" from QEMU, "kvm-vcpu-0" from
kvmtool): the PID is the digits after the *last* dash before ``[CPU]``.
FLAGS (4 or 5 characters) may be absent in old kernels. trace-cmd adds a
``version = 6`` header, ``cpus=N``, ``CPU:N [LOST EVENTS]`` and ``CPU N is
empty`` lines; tracefs adds ``#`` comment headers.

Streaming: the file is read line by line (bytes, decoded as UTF-8 with
replacement), never whole; events are kept as compact integer columns
(``array``) with interned names, so memory grows with the number of events,
not the size of the text, and a generator of lines can be parsed without
materialising it.

Ordering: per-CPU buffers are each in time order, but trace-cmd interleaves
them, and text pieced together from several buffers may not be. Lines are
merged through a bounded reorder window (``REORDER_WINDOW_NS`` of trace time,
at most ``REORDER_WINDOW_LINES`` lines held); a line older than what has
already been released is kept (at its arrival position) and counted as
``late``.

Messy input is reported, not fatal: unreadable lines are skipped and counted
by reason with the first line numbers kept as examples; lost-event markers
are counted and kept in the event stream (the replay then repairs whatever
the next events on that CPU contradict); invalid UTF-8 is replaced and
counted. Fatal (``TraceFormatError``, a one-line message with the line
number): an empty input, or no parsable event line among the first
``SNIFF_LINES`` lines.

What a trace cannot show: guest FP use (FP traps are handled in hyp without a
full exit), nor host tasks' FP use. The driver (kvmctx.engines.trace_driver)
combines the trace with a guest FP model chosen by the user and says so.
"""

from __future__ import annotations

import heapq
import json
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
REORDER_WINDOW_NS = 50_000_000      # 50 ms of trace time
REORDER_WINDOW_LINES = 200_000
SNIFF_LINES = 2000
MAX_CPU = 4095
MAX_EXAMPLES = 5

# Event kinds (column "kind")
K_SWITCH, K_ENTRY, K_EXIT, K_UEXIT, K_MIGRATE, K_IRQ, K_SOFTIRQ, K_LOADFP, K_PUTFP, K_LOST = \
    range(10)
KIND_NAMES = ("sched_switch", "kvm_entry", "kvm_exit", "kvm_userspace_exit",
              "sched_migrate_task", "irq_handler_entry", "softirq_entry",
              "kvm_arch_vcpu_load_fp", "kvm_arch_vcpu_put_fp", "lost_events")

# ESR exception classes (shared/reference/traces.md)
EC_NAMES = {
    0x00: "UNKNOWN", 0x01: "WFx", 0x03: "CP15_32", 0x04: "CP15_64", 0x05: "CP14_MR",
    0x06: "CP14_LS", 0x07: "FP_ASIMD", 0x08: "CP10_ID", 0x09: "PAC", 0x0C: "CP14_64",
    0x0E: "ILL", 0x11: "SVC32", 0x12: "HVC32", 0x13: "SMC32", 0x15: "SVC64", 0x16: "HVC64",
    0x17: "SMC64", 0x18: "SYS64", 0x19: "SVE", 0x1A: "ERET", 0x1C: "FPAC", 0x1D: "SME",
    0x1F: "IMP_DEF", 0x20: "IABT_LOW", 0x21: "IABT_CUR", 0x22: "PC_ALIGN", 0x24: "DABT_LOW",
    0x25: "DABT_CUR", 0x26: "SP_ALIGN", 0x28: "FP_EXC32", 0x2C: "FP_EXC64", 0x2F: "SERROR",
    0x30: "BREAKPT_LOW", 0x32: "SOFTSTP_LOW", 0x34: "WATCHPT_LOW", 0x38: "BKPT32",
    0x3A: "VECTOR32", 0x3C: "BRK64",
}
EXIT_TYPES = ("IRQ", "SERROR", "TRAP", "HYP_GONE")

_LINE = re.compile(
    r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[A-Za-z.][A-Za-z.0-9]{3,4})\s+)?(?P<ts>\d+\.\d+):\s+"
    r"(?:(?P<event>[A-Za-z_][\w:]*):\s*)?(?P<fields>.*?)\s*$")
_LOST = re.compile(r"^\s*CPU:?\s*(?P<cpu>\d+)\s*\[(?:\d+\s+)?LOST(?:\s+\d+)?\s+EVENTS\]")
_HEADER = re.compile(r"^\s*(?:#|version\s*=|cpus\s*=|CPU\s+\d+\s+is\s+empty|$)")
_SWITCH = re.compile(
    r"prev_comm=(?P<pc>.*?) prev_pid=(?P<pp>\d+) prev_prio=(?P<ppr>-?\d+) "
    r"prev_state=(?P<ps>\S+) ==> next_comm=(?P<nc>.*?) next_pid=(?P<np>\d+) "
    r"next_prio=(?P<npr>-?\d+)")
_MIGRATE = re.compile(
    r"comm=(?P<c>.*?) pid=(?P<p>\d+) prio=(?P<pr>-?\d+) orig_cpu=(?P<o>\d+) dest_cpu=(?P<d>\d+)")
_EXIT = re.compile(r"(?P<type>[A-Z_]+): HSR_EC: 0x(?P<ec>[0-9a-fA-F]+)(?: \((?P<name>[^)]*)\))?"
                   r"(?:, PC: 0x(?P<pc>[0-9a-fA-F]+))?")
_EXIT_OLD = re.compile(r"(?:vcpu \d+, )?(?:(?P<type>[A-Z_]+): )?.*?"
                       r"(?:esr_ec|HSR_EC)[=:]\s*0x(?P<ec>[0-9a-fA-F]+)")
_ENTRY = re.compile(r"(?:PC: 0x(?P<pc>[0-9a-fA-F]+)|vcpu \d+, pc 0x(?P<pc2>[0-9a-fA-F]+))")
_UEXIT = re.compile(r"reason (?P<reason>\S+)(?: \((?P<code>\d+)\))?")
_SOFTIRQ = re.compile(r"vec=(?P<vec>\d+)(?: \[action=(?P<action>\w+)\])?")
_IRQ = re.compile(r"irq=(?P<irq>\d+) name=(?P<name>\S+)")
_FUNC = re.compile(r"(?P<func>kvm_arch_vcpu_(?:load|put)_fp)\b")
_VCPU_NAME = re.compile(r"(?:CPU\s+(\d+)/KVM|kvm-vcpu-(\d+)|vcpu[-_ ]?(\d+))", re.IGNORECASE)

SOFTIRQ_VECS = {0: "HI", 1: "TIMER", 2: "NET_TX", 3: "NET_RX", 4: "BLOCK", 5: "IRQ_POLL",
                6: "TASKLET", 7: "SCHED", 8: "HRTIMER", 9: "RCU"}


class TraceFormatError(ValueError):
    """The input is not a trace we can read (one line, with the line number)."""


@dataclass
class ThreadInfo:
    pid: int
    comm: str
    role: str = "other"      # vcpu, idle, other
    vcpu: int = -1


@dataclass
class TraceWorkload:
    """Compact event columns in time order, plus what was skipped and why."""

    ts_ns: array = field(default_factory=lambda: array("q"))
    cpu: array = field(default_factory=lambda: array("l"))
    kind: array = field(default_factory=lambda: array("b"))
    pid: array = field(default_factory=lambda: array("q"))
    a: array = field(default_factory=lambda: array("q"))  # switch: next pid; migrate: orig;
    #                                                       exit: guest PC (low 32 bits)
    b: array = field(default_factory=lambda: array("q"))  # migrate: dest; exit: EC; irq
    c: array = field(default_factory=lambda: array("l"))  # exit: type index; uexit: code
    names: list[str] = field(default_factory=list)       # interned strings (reasons...)
    threads: dict[int, ThreadInfo] = field(default_factory=dict)
    n_cpus: int = 0
    lines: int = 0
    events: int = 0
    ignored: Counter = field(default_factory=Counter)     # other event names
    skipped: Counter = field(default_factory=Counter)     # reason -> count
    examples: dict[str, list[int]] = field(default_factory=dict)
    lost_events: int = 0
    late: int = 0
    replaced_chars: int = 0
    source: str = ""

    # ------------------------------------------------------------ building

    def _name(self, s: str) -> int:
        try:
            return self._name_idx[s]  # type: ignore[attr-defined]
        except AttributeError:
            self._name_idx = {n: i for i, n in enumerate(self.names)}  # type: ignore
            return self._name(s)
        except KeyError:
            self._name_idx[s] = len(self.names)  # type: ignore[attr-defined]
            self.names.append(s)
            return len(self.names) - 1

    def skip(self, reason: str, lineno: int) -> None:
        self.skipped[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < MAX_EXAMPLES:
            ex.append(lineno)

    def add(self, ts: int, cpu: int, kind: int, pid: int, a: int = 0, b: int = 0,
            c: int = 0) -> None:
        self.ts_ns.append(ts)
        self.cpu.append(cpu)
        self.kind.append(kind)
        self.pid.append(pid)
        self.a.append(a)
        self.b.append(b)
        self.c.append(c)
        self.events += 1
        if cpu + 1 > self.n_cpus:
            self.n_cpus = cpu + 1

    def thread(self, pid: int, comm: str) -> ThreadInfo:
        th = self.threads.get(pid)
        if th is None:
            th = ThreadInfo(pid, comm, "idle" if pid == 0 else "other")
            self.threads[pid] = th
        elif comm and th.comm != comm and not th.comm:
            th.comm = comm
        return th

    # ------------------------------------------------------------ reading

    def iter_events(self) -> Iterator[tuple[int, int, int, int, int, int, int]]:
        """(ts_ns, cpu, kind, pid, a, b, c) in time order."""
        return zip(self.ts_ns, self.cpu, self.kind, self.pid, self.a, self.b, self.c,
                   strict=True)

    def vcpu_threads(self) -> list[ThreadInfo]:
        return sorted((t for t in self.threads.values() if t.role == "vcpu"),
                      key=lambda t: t.vcpu)

    def segments(self) -> dict[int, list[dict[str, Any]]]:
        """Per vCPU thread pid: entry->exit run segments, with the exit reason and
        whether a kvm_userspace_exit followed before the next entry."""
        out: dict[int, list[dict[str, Any]]] = {}
        open_entry: dict[int, int] = {}
        last: dict[int, dict[str, Any]] = {}
        for ts, cpu, kind, pid, _a, b, c in self.iter_events():
            if kind == K_ENTRY:
                open_entry[pid] = ts
            elif kind == K_EXIT:
                start = open_entry.pop(pid, None)
                seg = {"cpu": cpu, "start_ns": start, "end_ns": ts, "ec": b,
                       "reason": EC_NAMES.get(b, f"EC_{b:#x}") if c != 0 else "IRQ",
                       "type": EXIT_TYPES[c] if 0 <= c < len(EXIT_TYPES) else "?",
                       "to_user": False}
                out.setdefault(pid, []).append(seg)
                last[pid] = seg
            elif kind == K_UEXIT and pid in last:
                last[pid]["to_user"] = True
        return out

    def summary(self) -> dict[str, Any]:
        segs = self.segments()
        vcpus = []
        for th in self.vcpu_threads():
            ss = segs.get(th.pid, [])
            reasons = Counter(s["reason"] for s in ss)
            in_guest = sum(s["end_ns"] - s["start_ns"] for s in ss if s["start_ns"] is not None)
            vcpus.append({"pid": th.pid, "comm": th.comm, "vcpu": th.vcpu, "segments": len(ss),
                          "exits_to_user": sum(1 for s in ss if s["to_user"]),
                          "exits_by_reason": dict(reasons.most_common()),
                          "guest_time_ns": in_guest})
        migrations = sum(1 for k in self.kind if k == K_MIGRATE)
        return {"source": self.source, "lines": self.lines, "events": self.events,
                "cpus": self.n_cpus, "threads": len(self.threads), "vcpus": vcpus,
                "migrations": migrations, "lost_events": self.lost_events, "late": self.late,
                "replaced_chars": self.replaced_chars, "skipped": dict(self.skipped),
                "skipped_examples": self.examples, "ignored": dict(self.ignored.most_common())}

    # ------------------------------------------------------------ files

    def to_parquet(self, path: str | Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        meta = {
            "schema_version": SCHEMA_VERSION, "names": self.names, "n_cpus": self.n_cpus,
            "threads": [[t.pid, t.comm, t.role, t.vcpu] for t in self.threads.values()],
            "lines": self.lines, "skipped": dict(self.skipped), "examples": self.examples,
            "ignored": dict(self.ignored), "lost_events": self.lost_events, "late": self.late,
            "replaced_chars": self.replaced_chars, "source": self.source,
        }
        table = pa.table({
            "ts_ns": pa.array(self.ts_ns, pa.int64()), "cpu": pa.array(self.cpu, pa.int32()),
            "kind": pa.array(self.kind, pa.int8()), "pid": pa.array(self.pid, pa.int64()),
            "a": pa.array(self.a, pa.int64()), "b": pa.array(self.b, pa.int64()),
            "c": pa.array(self.c, pa.int32()),
        }).replace_schema_metadata({"kvmctx.trace": json.dumps(meta)})
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        pq.write_table(table, tmp)
        tmp.replace(p)

    @staticmethod
    def from_parquet(path: str | Path) -> TraceWorkload:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
            meta = json.loads(table.schema.metadata[b"kvmctx.trace"])
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise TraceFormatError(f"{path}: not a kvmctx trace workload: {e}") from None
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise TraceFormatError(f"{path}: unsupported schema {meta.get('schema_version')}")
        w = TraceWorkload()
        for col, typ in (("ts_ns", "q"), ("cpu", "l"), ("kind", "b"), ("pid", "q"), ("a", "q"),
                         ("b", "q"), ("c", "l")):
            setattr(w, col, array(typ, table.column(col).to_pylist()))
        w.names = list(meta["names"])
        w.n_cpus = int(meta["n_cpus"])
        w.threads = {int(p): ThreadInfo(int(p), str(c), str(r), int(v))
                     for p, c, r, v in meta["threads"]}
        w.lines = int(meta["lines"])
        w.events = len(w.ts_ns)
        w.skipped = Counter(meta["skipped"])
        w.examples = {k: list(v) for k, v in meta["examples"].items()}
        w.ignored = Counter(meta["ignored"])
        w.lost_events = int(meta["lost_events"])
        w.late = int(meta["late"])
        w.replaced_chars = int(meta["replaced_chars"])
        w.source = str(meta["source"])
        return w


# --------------------------------------------------------------------------
# Parsing


def _lines_of(path: str | Path) -> Iterator[tuple[str, bool]]:
    """(decoded line, had invalid UTF-8) for each line of a file, streamed."""
    with open(path, "rb") as f:
        for raw in f:
            try:
                yield raw.decode("utf-8").rstrip("\r\n"), False
            except UnicodeDecodeError:
                yield raw.decode("utf-8", errors="replace").rstrip("\r\n"), True


def parse_file(path: str | Path) -> TraceWorkload:
    p = Path(path)
    try:
        exists, is_dir = p.exists(), p.is_dir()
    except OSError as e:   # a name too long for the file system
        raise TraceFormatError(f"{str(p)[:80]}: cannot read: {e.strerror or e}") from None
    if not exists:
        raise TraceFormatError(f"{p}: no such file")
    if is_dir:
        raise TraceFormatError(f"{p}: is a directory, not a trace file")
    try:
        w = parse_lines(_lines_of(p), source=str(p))
    except OSError as e:
        raise TraceFormatError(f"{p}: cannot read: {e.strerror or e}") from None
    return w


def parse_lines(lines: Iterable[str | tuple[str, bool]], source: str = "<lines>"
                ) -> TraceWorkload:
    """Parse decoded lines (or (line, had_bad_bytes) pairs) into a workload."""
    w = TraceWorkload(source=source)
    heap: list[tuple[int, int, tuple]] = []
    released = -1 << 62
    seq = 0
    max_ts = -1 << 62
    seen_event = False
    lineno = 0
    last_line_ok = True

    def release(until: int) -> None:
        nonlocal released
        while heap and (heap[0][0] <= until or len(heap) > REORDER_WINDOW_LINES):
            ts, _s, rec = heapq.heappop(heap)
            released = max(released, ts)
            _emit(w, rec)

    for item in lines:
        if isinstance(item, tuple):
            line, bad = item
        else:
            line, bad = item, False
        lineno += 1
        w.lines = lineno
        if bad or "\ufffd" in line:
            w.replaced_chars += line.count("\ufffd") or 1
        rec = _parse_line(w, line, lineno)
        last_line_ok = rec is not None
        if rec is None:
            if not seen_event and lineno >= SNIFF_LINES:
                raise TraceFormatError(f"{source}:{lineno}: no ftrace event line in the first "
                                       f"{SNIFF_LINES} lines; not a trace-cmd report or "
                                       "tracefs trace")
            continue
        if rec[0] == "lost":
            # Lost events on a CPU: a marker in time order (at the newest time seen),
            # after which the replay trusts nothing about that CPU until it is told.
            w.lost_events += 1
            rec = (max(max_ts, 0), rec[1], -1, "", "__lost__", "", lineno)
        else:
            seen_event = True
        ts = rec[0]
        if ts < released:
            w.late += 1
            _emit(w, rec)
            continue
        seq += 1
        heapq.heappush(heap, (ts, seq, rec))
        if ts > max_ts:
            max_ts = ts
        release(max_ts - REORDER_WINDOW_NS)
    if lineno == 0:
        raise TraceFormatError(f"{source}:1: empty input, not a trace")
    if not seen_event:
        raise TraceFormatError(f"{source}:{lineno}: no ftrace event line found; not a "
                               "trace-cmd report or tracefs trace")
    release(1 << 62)
    if not last_line_ok and w.skipped:
        # The last line could not be read: most likely cut off mid-write.
        for reason in list(w.skipped):
            ex = w.examples.get(reason, [])
            if ex and ex[-1] == lineno:
                w.skipped[reason] -= 1
                if not w.skipped[reason]:
                    del w.skipped[reason]
                ex.pop()
                w.skip("truncated last line", lineno)
                break
    _infer_roles(w)
    return w


def _parse_line(w: TraceWorkload, line: str, lineno: int) -> tuple | None:
    """A record tuple, "lost", or None (header/skipped)."""
    m = _LINE.match(line)
    if m is None:
        lm = _LOST.match(line)
        if lm:
            cpu = int(lm.group("cpu")[:5])
            if cpu > MAX_CPU:
                w.skip("number out of range", lineno)
                return None
            return ("lost", cpu)
        if _HEADER.match(line):
            return None
        w.skip("not an ftrace line", lineno)
        return None
    try:
        cpu = int(m.group("cpu"))
        pid = int(m.group("pid"))
        sec, _, frac = m.group("ts").partition(".")
        ts = int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])
    except ValueError:
        w.skip("bad number", lineno)
        return None
    if cpu > MAX_CPU or pid > (1 << 40) or ts > (1 << 62):
        w.skip("number out of range", lineno)
        return None
    event = m.group("event")
    fields = m.group("fields")
    task = m.group("task").strip()
    if event is None:
        fm = _FUNC.match(fields)
        if fm is None:
            w.ignored["function"] += 1
            return None
        event, fields = "function", fields
    return (ts, cpu, pid, task, event, fields, lineno)


def _emit(w: TraceWorkload, rec: tuple) -> None:
    ts, cpu, pid, task, event, fields, lineno = rec
    if event == "__lost__":
        w.add(ts, cpu, K_LOST, -1)
    elif event == "sched_switch":
        m = _SWITCH.search(fields)
        if m is None:
            w.skip("malformed sched_switch", lineno)
            return
        prev, nxt = int(m.group("pp")), int(m.group("np"))
        if prev > (1 << 40) or nxt > (1 << 40):
            w.skip("number out of range", lineno)
            return
        w.thread(prev, m.group("pc"))
        w.thread(nxt, m.group("nc"))
        w.add(ts, cpu, K_SWITCH, prev, nxt, 1 if m.group("ps").startswith("R") else 0)
    elif event == "kvm_entry":
        if _ENTRY.search(fields) is None and fields:
            w.skip("malformed kvm_entry", lineno)
            return
        th = w.thread(pid, task)
        th.role = "vcpu"
        w.add(ts, cpu, K_ENTRY, pid)
    elif event == "kvm_exit":
        m = _EXIT.search(fields) or _EXIT_OLD.search(fields)
        if m is None:
            w.skip("malformed kvm_exit", lineno)
            return
        try:
            ec = int(m.group("ec"), 16)
        except ValueError:
            w.skip("bad number", lineno)
            return
        typ = m.group("type") or "TRAP"
        tidx = EXIT_TYPES.index(typ) if typ in EXIT_TYPES else 2
        th = w.thread(pid, task)
        th.role = "vcpu"
        pc = m.group("pc") if "pc" in m.re.groupindex else None
        # a: the exit's guest PC, low 32 bits (enough to place it in a guest image).
        w.add(ts, cpu, K_EXIT, pid, int(pc[-8:], 16) if pc else 0, ec & 0x3F, tidx)
    elif event == "kvm_userspace_exit":
        m = _UEXIT.search(fields)
        if m is None:
            w.skip("malformed kvm_userspace_exit", lineno)
            return
        code = int(m.group("code")) if m.group("code") and len(m.group("code")) < 10 else -1
        w.thread(pid, task).role = "vcpu"
        w.add(ts, cpu, K_UEXIT, pid, w._name(m.group("reason")), 0, code)
    elif event == "sched_migrate_task":
        m = _MIGRATE.search(fields)
        if m is None:
            w.skip("malformed sched_migrate_task", lineno)
            return
        p, o, d = int(m.group("p")), int(m.group("o")), int(m.group("d"))
        if o > MAX_CPU or d > MAX_CPU or p > (1 << 40):
            w.skip("number out of range", lineno)
            return
        w.thread(p, m.group("c"))
        w.add(ts, cpu, K_MIGRATE, p, o, d)
    elif event == "softirq_entry":
        m = _SOFTIRQ.search(fields)
        if m is None:
            w.skip("malformed softirq_entry", lineno)
            return
        w.add(ts, cpu, K_SOFTIRQ, pid, min(int(m.group("vec")), 1 << 30))
    elif event == "irq_handler_entry":
        m = _IRQ.search(fields)
        if m is None:
            w.skip("malformed irq_handler_entry", lineno)
            return
        w.add(ts, cpu, K_IRQ, pid, min(int(m.group("irq")), 1 << 30))
    elif event == "function":
        fm = _FUNC.match(fields)
        if fm is not None:
            w.add(ts, cpu, K_LOADFP if "load" in fm.group("func") else K_PUTFP, pid)
    else:
        w.ignored[event] += 1


def _infer_roles(w: TraceWorkload) -> None:
    """vCPU threads: number them from their names (QEMU "CPU n/KVM", kvmtool
    "kvm-vcpu-n"), else by first appearance."""
    vcpus = [t for t in w.threads.values() if t.role == "vcpu"]
    used: set[int] = set()
    for t in vcpus:
        m = _VCPU_NAME.search(t.comm)
        if m:
            n = int(next(g for g in m.groups() if g is not None))
            if n not in used:
                t.vcpu = n
                used.add(n)
    nxt = 0
    for t in sorted(vcpus, key=lambda t: t.pid):
        if t.vcpu < 0:
            while nxt in used:
                nxt += 1
            t.vcpu = nxt
            used.add(nxt)
    # Renumber densely 0..n-1 in vCPU order (the model needs dense indices).
    for i, t in enumerate(sorted(vcpus, key=lambda t: t.vcpu)):
        t.vcpu = i
