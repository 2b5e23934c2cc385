"""Counterexamples as stories a kernel engineer reads like a bug report.

A counterexample is a list of actions from the initial state. ``replay``
runs it through the model step by step and records, after each step, what
every CPU holds and which fields changed; ``story_table`` prints it with one
column per CPU and one row per step; the last row carries the read (or the
WARN) that went wrong. ``save_cex``/``load_cex`` round-trip it as JSON so
``kvmctx replay`` can re-run it later - it must reproduce every time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from kvmctx import __version__
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
    TAG_ZA,
    THREAD,
    VCPU,
)
from kvmctx.model.machine import ACTION_NAMES, Model
from kvmctx.model.values import NO_CPU

CEX_FORMAT = 1
# Ghost bookkeeping (the checker's view of "latest"), hidden from the diff.
_HIDDEN_PREFIXES = ("ghost.",)


@dataclass
class StepRecord:
    index: int
    action: tuple[int, int, int]
    text: str
    cpu: int
    changes: list[str]
    cpus: list[str]
    violations: list[dict[str, Any]] = field(default_factory=list)


class CexError(ValueError):
    """A counterexample file that cannot be used (one-line message)."""


def _entity(m: Model, dim: str, i: int) -> str:
    if dim == CPU:
        return f"CPU{i}"
    if dim == THREAD:
        return m.tname(i)
    if dim == CTX:
        return m.name(i)
    if dim == VCPU:
        return m.name(m.vctx[i])
    return ""


def render_value(m: Model, ref: str | None, v: int) -> str:
    if ref in (TAG_LO, TAG_HI, TAG_ZA):
        return m.tagname(v)
    if ref == REF_CTX:
        return m.name(v) if v else "none"
    if ref == REF_THREAD:
        return m.tname(v)
    if ref == REF_CPU:
        return "none" if v == NO_CPU else f"CPU{v}"
    if ref == REF_PC:
        return m.point_name(v) if v < len(m.prog.points) else str(v)
    return str(v)


def diff(m: Model, before: list[int], after: list[int]) -> list[str]:
    out = []
    for f in m.layout.fields.values():
        if f.name.startswith(_HIDDEN_PREFIXES) or f.ref == REF_VER:
            continue
        for i in range(f.count):
            j = f.start + i
            if before[j] != after[j]:
                ent = _entity(m, f.dim, i)
                out.append(f"{f.name.split('.', 1)[-1]}[{ent}]: "
                           f"{render_value(m, f.ref, before[j])} -> "
                           f"{render_value(m, f.ref, after[j])}")
    return out


def cpu_cell(m: Model, s: list[int], k: int) -> str:
    t = s[m.cur[k]]
    where = m.point_name(s[m.pc[t]]) if t else "idle"
    bound = s[m.bound[k]]
    lines = [f"{m.tname(t)}: {where}",
             f"V: {m.tagname(s[m.lo[k]])}  Zhi: {m.tagname(s[m.hi[k]])}",
             f"bound: {m.name(bound) if bound else 'none'}"]
    if t:
        lines.append(f"FOREIGN={s[m.foreign[t]]} SVE={s[m.tif_sve[t]]}")
    return "\n".join(lines)


def replay(m: Model, actions: list[tuple[int, int, int]], features: frozenset[str] | None = None,
           stop_at_violation: bool = True) -> tuple[list[StepRecord], list[int]]:
    """Run actions from the initial state; record each step. Raises CexError if an
    action is not enabled where the file says it happens."""
    m.check_invariants = True
    m.dedupe_lost = False
    m.vio.clear()
    s = m.new_state()
    recs: list[StepRecord] = []
    for i, a in enumerate(actions):
        a = (int(a[0]), int(a[1]), int(a[2]))
        if features is not None and a not in m.enabled(s, features):
            raise CexError(f"step {i + 1}: action {describe_action(a)} is not enabled in the "
                           "replayed state (the file does not match this model/policy)")
        text = m.action_text(s, a)
        before = s.copy()
        m.apply(s, a)
        if not m.vio:
            m.check_recoverable(s)
        vios = [v.as_dict(m) for v in m.vio]
        m.vio.clear()
        cpu = a[1] if a[0] != 2 else -1  # MIGRATE's first argument is a thread
        recs.append(StepRecord(i + 1, a, text, cpu, diff(m, before, s),
                               [cpu_cell(m, s, k) for k in range(m.ncpu)], vios))
        if vios and stop_at_violation:
            break
    return recs, s


def describe_action(a: tuple[int, int, int]) -> str:
    from kvmctx.model.features import all_actions

    kind = a[0]
    ext = all_actions()
    if 0 <= kind < len(ACTION_NAMES):
        name = ACTION_NAMES[kind]
    elif kind in ext:
        name = ext[kind].name
    else:
        name = f"kind{kind}"
    return f"{name}({a[1]}, {a[2]})"


def story_table(m: Model, recs: list[StepRecord], title: str = "") -> Table:
    t = Table(title=title or None, show_lines=True, title_justify="left")
    t.add_column("#", justify="right")
    for k in range(m.ncpu):
        t.add_column(f"CPU{k}", overflow="fold")
    t.add_column("what changed", overflow="fold")
    for r in recs:
        cells = []
        for k in range(m.ncpu):
            cell = r.cpus[k]
            if k == r.cpu:
                cell = f"[bold]{_esc(r.text)}[/bold]\n{_esc(cell)}"
            else:
                cell = f"[dim]{_esc(cell)}[/dim]"
            cells.append(cell)
        changes = "\n".join(_esc(c) for c in r.changes[:12])
        if len(r.changes) > 12:
            changes += f"\n(+{len(r.changes) - 12} more)"
        if r.cpu < 0:
            changes = f"[bold]{_esc(r.text)}[/bold]\n" + changes
        for v in r.violations:
            changes += f"\n[bold red]{v['invariant'].upper()}: {_esc(v['message'])}[/bold red]"
        t.add_row(str(r.index), *cells, changes)
    return t


def _esc(s: str) -> str:
    return s.replace("[", "\\[")


def story_text(m: Model, recs: list[StepRecord]) -> list[str]:
    """A plain, one-line-per-step version (for JSON and logs)."""
    out = []
    for r in recs:
        line = f"{r.index:3d}. " + (f"[CPU{r.cpu}] " if r.cpu >= 0 else "") + r.text
        out.append(line)
        for v in r.violations:
            out.append(f"     => {v['invariant']}: {v['message']}")
    return out


# ----------------------------------------------------------------- files


def save_cex(path: str | Path, payload: dict[str, Any]) -> None:
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(p)


def cex_payload(m: Model, result: Any, recs: list[StepRecord], policy_ref: dict[str, Any]
                ) -> dict[str, Any]:
    return {
        "format": CEX_FORMAT,
        "kvmctx_version": __version__,
        "policy": policy_ref,
        "bounds": result.bounds.as_dict(),
        "violation": result.violation,
        "steps": [{"action": list(r.action), "text": r.text, "cpu": r.cpu,
                   "changes": r.changes, "violations": r.violations} for r in recs],
        "story": story_text(m, recs),
    }


def load_cex(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CexError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CexError(f"{p}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise CexError(f"{p}: not JSON (line {e.lineno}): {e.msg}") from None
    if not isinstance(data, dict):
        raise CexError(f"{p}: not a kvmctx counterexample (expected a JSON object)")
    if data.get("format") != CEX_FORMAT:
        raise CexError(f"{p}: unsupported counterexample format {data.get('format')!r}")
    for key in ("policy", "bounds", "steps"):
        if key not in data:
            raise CexError(f"{p}: missing field {key!r}")
    steps = data["steps"]
    if not isinstance(steps, list) or not steps:
        raise CexError(f"{p}: 'steps' must be a non-empty list")
    for i, st in enumerate(steps, start=1):
        a = st.get("action") if isinstance(st, dict) else None
        if (not isinstance(a, list) or len(a) != 3
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in a)):
            raise CexError(f"{p}: step {i}: 'action' must be a list of three integers")
        from kvmctx.model.features import all_actions

        known = 0 <= a[0] < len(ACTION_NAMES) or a[0] in all_actions()
        if not known or not all(0 <= x < 256 for x in a[1:]):
            raise CexError(f"{p}: step {i}: action {a} is out of range")
    if not isinstance(data["bounds"], dict):
        raise CexError(f"{p}: 'bounds' must be an object")
    ref = data["policy"]
    # The key replay uses: a mutant, else a policy file, else a policy name.
    used = next((k for k in ("mutant", "policy_file", "name")
                 if isinstance(ref, dict) and k in ref), None)
    if used is None or not isinstance(ref[used], str):
        raise CexError(f"{p}: 'policy' must be an object naming a policy, mutant or "
                       "policy_file (a string)")
    vio = data.get("violation")
    if vio is not None and not (isinstance(vio, dict)
                                and isinstance(vio.get("invariant", ""), str)):
        raise CexError(f"{p}: 'violation' must be null or an object whose 'invariant' is a "
                       "string")
    return data
