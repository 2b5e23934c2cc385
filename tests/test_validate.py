"""Ground truth against real KVM under QEMU: the parsers on real captures, and the
quick end-to-end run (sets itself up with apt-get where it can, as on CI)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvmctx import api
from kvmctx.io import trace as T
from kvmctx.validation import runner as R

DATA = Path(__file__).parent / "data" / "traces"
REAL = sorted(DATA.glob("real-*.txt"))
SYMS = R.load_syms(Path(__file__).parent / "data" / "guest.syms")  # nm of the guest built


def test_real_captures_are_read_by_the_importer() -> None:
    assert REAL, "real ftrace captures from validate-real are kept as fixtures"
    for p in REAL:
        tw = T.parse_file(p)
        s = tw.summary()
        assert s["vcpus"] and s["skipped"] == {}, p.name
        assert all(v["comm"].startswith("vmm") for v in s["vcpus"])


@pytest.mark.parametrize("name,fp_segments", [("fp-every-exit", 40), ("fp-every-other", 20),
                                              ("no-fp", 0), ("sve", 40)])
def test_fp_plan_follows_the_scenario_definition(name: str, fp_segments: int) -> None:
    p = DATA / f"real-6.1-vhe-{name}.txt"
    tw = T.parse_file(p)
    sc = R.SCENARIOS[name]
    plan = R.fp_plan(tw, sc, SYMS)
    assert sum(fp for fp, _ in plan[0]) == fp_segments
    r = api.run_trace(tw, R.POLICY_FOR_MODE["vhe"], scenario=R.validation_workload(sc),
                      fp_plan=plan, knobs={})
    # Real traps counted by QEMU for these captures (docs/validation.md): equal.
    assert r.counters["guest_fp_traps"] == fp_segments
    assert r.metrics()["violations"] == 0


def test_exception_log_parser_counts_only_guest_traps_in_the_window(tmp_path: Path) -> None:
    def block(kind: str, frm: int, to: int, esr: int, elr: int) -> str:
        return (f"Taking exception 1 [{kind}] on CPU 0\n...from EL{frm} to EL{to}\n"
                f"...with ESR 0x{esr >> 26:x}/0x{esr:x}\n...with ELR 0x{elr:x}\n"
                f"...to EL2 PC 0xffff800080010000 PSTATE 0x3c9\n")
    hvc = lambda imm: (0x16 << 26) | imm  # noqa: E731
    fp = 0x07 << 26
    log = "".join([
        block("Undefined Instruction", 1, 2, fp, 0x40000054),        # before the window
        block("Hypervisor Call", 1, 2, hvc(R.MARK_START), 0x4000002c),
        block("Undefined Instruction", 1, 2, fp, 0x40000054),        # counted
        block("IRQ", 2, 2, fp, 0x40000054),                          # stale syndrome
        block("Undefined Instruction", 0, 2, fp, 0xffff0000),        # host EL0
        block("Undefined Instruction", 1, 2, 0x19 << 26, 0x40000080),  # SVE, counted
        block("Hypervisor Call", 1, 2, hvc(R.MARK_END), 0x400000a0),
        block("Undefined Instruction", 1, 2, fp, 0x40000054),        # after
    ])
    f = tmp_path / "q.log"
    f.write_text(log)
    c = R.count_traps(R.exceptions(f), [R.SCENARIOS["fp-every-exit"]])
    assert c["fp-every-exit"]["fp"] == 1 and c["fp-every-exit"]["sve"] == 1
    assert c["fp-every-exit"]["window_found"] == 1


def test_guest_symbols_fixture_matches_the_source() -> None:
    src = (Path(R.__file__).parent / "guest.S").read_text()
    for label in ("loop", "fp", "fp_end", "every_other", "nofp", "sve", "sve_end", "longfp",
                  "longfp_end", "report", "done"):
        assert f"{label}:" in src and label in SYMS, label


def test_protected_mode_policy_follows_the_kernel_version() -> None:
    assert R.policy_for("6.1.0-56-arm64", "protected") == "upstream-6.14"
    assert R.policy_for("6.12.117+deb12-arm64", "protected") == "pkvm"
    assert R.policy_for("6.12.117+deb12-arm64", "vhe") == "upstream-6.14"


def test_serial_parser_splits_runs() -> None:
    serial = ("noise\n@@KVM /dev/kvm kvm [1]: VHE mode initialized\n@@BEGIN no-fp\n"
              "vcpu 0 exits 41 mmio 40 ok\n@@RC 0\n@@TRACE-BEGIN\n# tracer: nop\nx\n"
              "@@TRACE-END\n@@END no-fp\n")
    kvm, runs = R.parse_serial(serial)
    assert "VHE" in kvm and runs["no-fp"].rc == 0
    assert runs["no-fp"].vmm == ["vcpu 0 exits 41 mmio 40 ok"]
    assert runs["no-fp"].trace.startswith("# tracer: nop")


@pytest.mark.parametrize("mode,line", [
    ("vhe", "kvm [1]: VHE mode initialized"),                 # 6.1 and 6.12
    ("nvhe", "kvm [1]: Hyp mode initialized"),                # 6.1
    ("nvhe", "kvm [1]: Hyp nVHE mode initialized"),           # 6.12
    ("protected", "kvm [1]: Protected nVHE mode initialized"),  # 6.1
    ("protected", "kvm [1]: Protected hVHE mode initialized"),  # 6.12 on -cpu max
])
def test_kvm_init_line_names_exactly_its_mode(mode: str, line: str) -> None:
    for m, pat in R.MODE_INIT.items():
        assert bool(re.search(pat, "/dev/kvm " + line)) == (m == mode), (m, line)


def test_a_kernel_panic_is_kept_in_the_failing_run() -> None:
    serial = ("@@KVM /dev/kvm kvm [1]: Protected hVHE mode initialized\n@@BEGIN two-vcpu-migrate\n"
              "[   16.1] SError Interrupt on CPU0, code 0x00000000bc000000 -- SError\n"
              "[   16.2] Kernel panic - not syncing: Asynchronous SError Interrupt\n")
    _kvm, runs = R.parse_serial(serial)
    run = runs["two-vcpu-migrate"]
    assert run.rc == -1 and any("Kernel panic" in v for v in run.vmm)


def _can_set_up() -> bool:
    have = all(shutil.which(t) for t in R.HOST_TOOLS)
    return have or (os.geteuid() == 0 and shutil.which("apt-get") is not None)


@pytest.mark.skipif(not _can_set_up(), reason="needs the Debian packages or root with apt")
def test_validate_real_quick_matches_the_real_kernel() -> None:
    r = subprocess.run([sys.executable, "-m", "kvmctx", "validate-real", "--quick", "--json"],
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout)
    assert [x["scenario"] for x in rows] == list(R.QUICK)
    for x in rows:
        assert x["status"] == "ok" and x["real"] == x["predicted"], x


def test_an_irq_exit_at_the_first_fp_instruction_counts_as_a_trapped_use() -> None:
    """The trap was taken and the FP state loaded; the interrupt that became pending
    meanwhile was taken before the instruction retired (docs/validation.md)."""
    sc = R.SCENARIOS["fp-every-exit"]
    lo, _hi = R._block(sc, SYMS)
    head = SYMS["loop"]
    assert R._segment_uses_fp(sc, head, lo, False, SYMS, irq=True)
    assert not R._segment_uses_fp(sc, head, lo, False, SYMS, irq=False)
    assert not R._segment_uses_fp(sc, lo, lo, False, SYMS, irq=True), \
        "entered at the instruction and left there: fp_plan takes it as not run"
