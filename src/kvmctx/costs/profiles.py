"""Cost profiles: cycles per counted event, every number with its source.

A profile turns the simulator's counters into cycles. Save and restore
costs are per byte, so an SVE VL2048 image (8,736 B) costs what 8,736 bytes
cost, not what an FPSIMD image (520 B) costs; the per-byte figure comes from
the measured FPSIMD save/restore cost divided by 520 bytes.

Marks (shared/reference/costs.md): ``v`` read in the source, ``r`` recalled
from the source (check before quoting as fact), ``a`` a named assumption.
Profiles are TOML files:

    [profile]
    name = "my-board"
    description = "..."
    [costs.fpsimd_save]
    value = 282
    unit = "cycles per 520 B"
    source = "..."
    mark = "r"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kvmctx.model import counters as C

# Every profile must define exactly these keys.
COST_KEYS = {
    "fpsimd_save": "cycles to save the 520-byte FPSIMD image (scaled by bytes for SVE)",
    "fpsimd_restore": "cycles to restore the 520-byte FPSIMD image (scaled by bytes)",
    "guest_fp_trap": "cycles for a guest FP/SVE access trap to EL2 and ERET (fast path)",
    "host_sve_trap": "cycles for an EL0 SVE (or SME: do_sme_acc) access trap to EL1 and back "
                     "(do_sve_acc)",
    "isb": "cycles per ISB after a trap-control write",
    "trap_write": "cycles per CPTR_EL2/CPACR_EL1/HCPTR write",
    "sysreg_save": "cycles per system register saved",
    "sysreg_restore": "cycles per system register restored",
    "guest_exit": "cycles per full guest exit and re-entry (world switch), reported apart",
}
MARKS = {"v", "r", "a"}
# A cost is at most a second of a GHz core: bigger is a typo, and inf or nan
# would turn every total into nan.
MAX_COST = 1e9


class ProfileError(ValueError):
    """A cost profile that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class Cost:
    value: float
    unit: str
    source: str
    mark: str


@dataclass(frozen=True)
class CostProfile:
    name: str
    description: str
    costs: dict[str, Cost]
    path: str = ""

    def __getitem__(self, key: str) -> float:
        return self.costs[key].value

    def cycles(self, ctr: list[int]) -> dict[str, float]:
        """Price counters: FP-switching cycles by component, and exits apart."""
        save_b = self["fpsimd_save"] / 520.0
        rest_b = self["fpsimd_restore"] / 520.0
        parts = {
            "traps": ctr[C.GUEST_FP_TRAPS] * self["guest_fp_trap"]
            + (ctr[C.HOST_SVE_TRAPS] + ctr[C.HOST_SME_TRAPS]) * self["host_sve_trap"],
            # Signal frame records (sig-frames) and a clone()'s copy of the parent's
            # FPSIMD image (arch_dup_task_struct's *dst = *src; v6.16 copies no SVE image)
            # are priced per byte like a save: the copy moves the same bytes through the
            # same stores (a named assumption).
            "saves": (ctr[C.BYTES_SAVED] + ctr[C.SIGFRAME_BYTES] + ctr[C.CLONE_BYTES])
            * save_b,
            "restores": ctr[C.BYTES_RESTORED] * rest_b,
            "trap_control": ctr[C.TRAP_WRITES] * self["trap_write"] + ctr[C.ISBS] * self["isb"],
            "sysregs": ctr[C.SYSREG_SAVES] * self["sysreg_save"]
            + ctr[C.SYSREG_RESTORES] * self["sysreg_restore"],
        }
        parts["total"] = sum(parts.values())
        parts["exits"] = ctr[C.GUEST_EXITS] * self["guest_exit"]
        return parts

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "costs": {k: vars(c) for k, c in self.costs.items()}}


def parse_profile(text: str, origin: str) -> CostProfile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{origin}: not valid TOML: {e}") from None
    prof = data.get("profile")
    if not isinstance(prof, dict) or not isinstance(prof.get("name"), str):
        raise ProfileError(f"{origin}: missing [profile] table with a string 'name'")
    costs_t = data.get("costs")
    if not isinstance(costs_t, dict):
        raise ProfileError(f"{origin}: missing [costs] tables")
    unknown = set(costs_t) - set(COST_KEYS)
    if unknown:
        raise ProfileError(f"{origin}: unknown cost field costs.{sorted(unknown)[0]}; "
                           f"valid: {', '.join(COST_KEYS)}")
    costs: dict[str, Cost] = {}
    for key in COST_KEYS:
        entry = costs_t.get(key)
        if entry is None:
            raise ProfileError(f"{origin}: missing cost field costs.{key} ({COST_KEYS[key]})")
        if not isinstance(entry, dict):
            raise ProfileError(f"{origin}: costs.{key} must be a table with value/source/mark")
        val = entry.get("value")
        if (isinstance(val, bool) or not isinstance(val, int | float)
                or not 0 <= val <= MAX_COST):   # also refuses nan and inf
            raise ProfileError(f"{origin}: costs.{key}.value must be a number in "
                               f"0..{MAX_COST:.0e} (cycles)")
        src = entry.get("source")
        if not isinstance(src, str) or not src.strip():
            raise ProfileError(f"{origin}: costs.{key}.source must say where the number "
                               "comes from (or 'assumption: ...')")
        mark = entry.get("mark", "a")
        if not isinstance(mark, str) or mark not in MARKS:
            raise ProfileError(f"{origin}: costs.{key}.mark must be one of v, r, a")
        costs[key] = Cost(float(val), str(entry.get("unit", "cycles")), src, mark)
    return CostProfile(prof["name"], str(prof.get("description", "")), costs, origin)


BUILTIN = ("xgene-nvhe", "n1-vhe")
DEFAULT_PROFILE = "xgene-nvhe"


def load_profile(name_or_path: str | None) -> CostProfile:
    """A built-in profile by name, or a TOML file by path."""
    name = name_or_path or DEFAULT_PROFILE
    if name in BUILTIN:
        text = resources.files("kvmctx.costs").joinpath(f"{name}.toml").read_text()
        return parse_profile(text, name)
    p = Path(name)
    try:
        exists = p.exists()
    except OSError as e:   # a name too long for the file system
        raise ProfileError(f"cost profile {name[:80]!r}: {e.strerror or e}") from None
    if not exists:
        raise ProfileError(f"unknown cost profile {name!r}: not a built-in "
                           f"({', '.join(BUILTIN)}) and no such file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"{p}: cannot read: {e}") from None
    return parse_profile(text, str(p))
