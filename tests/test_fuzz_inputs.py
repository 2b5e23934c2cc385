"""The other files users hand kvmctx, fuzzed like the trace reader: sweep specs,
cost profiles and counterexamples. Each mutated file is either accepted or
refused with the loader's own one-line error; nothing else escapes."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmctx import policies as P
from kvmctx.costs.profiles import ProfileError, load_profile
from kvmctx.engines import checker as CK
from kvmctx.engines import story as ST
from kvmctx.engines.sweep import SpecError, load_spec
from kvmctx.model.machine import Model

ROOT = Path(__file__).resolve().parents[1]
SPEC = (ROOT / "examples" / "sweep.toml").read_bytes()
PROFILE = (ROOT / "src" / "kvmctx" / "costs" / "xgene-nvhe.toml").read_bytes()
JUNK = [b"", b"\x00", b"\xff\xfe", b"=", b"[", b"]", b"\"", b"'", b"{", b"}", b"-1",
        b"1e999", b"99999999999999999999999", b"nan", b"true", b"\n[grid]\n", b"\n[sweep]\n",
        b"value = -5\n", b"mark = \"x\"\n", b"seeds = 0\n", b"events = -1\n", "é".encode()]


def mutate(base: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Cut, insert junk, or duplicate at positions chosen by hypothesis."""
    b = bytearray(base)
    for op, pos, arg in edits:
        i = pos % (len(b) + 1)
        if op == 0:
            del b[i:i + 1 + arg % 40]                       # truncate a stretch
        elif op == 1:
            b[i:i] = JUNK[arg % len(JUNK)]                  # insert junk
        elif op == 2:
            b[i:i] = b[max(0, i - 1 - arg % 60):i]          # duplicate a stretch
        else:
            b = b[:i]                                       # truncated file
    return bytes(b)


EDITS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10_000), st.integers(0, 10_000)),
                 min_size=1, max_size=6)
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def one_line(msg: str) -> None:
    assert msg and "\n" not in msg.strip() and "Traceback" not in msg


@FUZZ
@given(EDITS)
def test_mutated_sweep_specs_load_or_fail_with_one_line(tmp_path: Path, edits) -> None:
    p = tmp_path / "spec.toml"
    p.write_bytes(mutate(SPEC, edits))
    try:
        spec = load_spec(p)
    except SpecError as e:
        one_line(str(e))
        return
    assert spec.policies and spec.events >= 0


@FUZZ
@given(EDITS)
def test_mutated_cost_profiles_load_or_fail_with_one_line(tmp_path: Path, edits) -> None:
    p = tmp_path / "profile.toml"
    p.write_bytes(mutate(PROFILE, edits))
    try:
        prof = load_profile(str(p))
    except ProfileError as e:
        one_line(str(e))
        return
    assert all(c.value >= 0 for c in prof.costs.values())


def _cex_bytes(tmp: Path) -> bytes:
    pol = P.get("dall-tif-2018")
    b, _ = CK.adapt_bounds(CK.BOUNDS["small"], pol.supports)
    model = Model(b.config(), pol)
    res = CK.Checker(model, b).run()
    assert res.violation is not None
    recs, _ = ST.replay(model, res.path, b.features)
    out = tmp / "cex.json"
    ST.save_cex(out, ST.cex_payload(model, res, recs, {"name": pol.name}))
    return out.read_bytes()


CEX: list[bytes] = []


@FUZZ
@given(EDITS)
def test_mutated_counterexamples_replay_or_fail_with_one_line(tmp_path: Path, edits) -> None:
    """The same loading path and the same error handling as `kvmctx replay`."""
    from kvmctx.cli.cmd_check import policy_from_ref

    if not CEX:
        CEX.append(_cex_bytes(tmp_path))
    p = tmp_path / "cex.json"
    p.write_bytes(mutate(CEX[0], edits))
    try:
        data = ST.load_cex(p)
        pol, _ = policy_from_ref(data["policy"])
        b = CK.Bounds.from_dict(data["bounds"])
        ST.replay(Model(b.config(), pol), [tuple(s["action"]) for s in data["steps"]],
                  b.features)
    except ST.CexError as e:
        one_line(str(e))
    except (KeyError, TypeError, ValueError) as e:
        one_line(f"{p}: malformed: {e}")   # what replay prints, exit status 2


def test_replay_cli_refuses_garbage_with_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    for i, text in enumerate(["", "{", "[]", json.dumps({"format": 1}), "\xff"]):
        f = tmp_path / f"bad{i}.json"
        f.write_text(text, encoding="latin-1")
        r = subprocess.run([sys.executable, "-m", "kvmctx", "replay", str(f)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (text, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70)
                           | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                           max_leaves=12)


@FUZZ
@given(st.sampled_from(["policy", "bounds", "steps", "violation", "format"]), JSON_VALUES,
       st.integers(0, 50))
def test_counterexamples_with_wrong_field_types_fail_with_one_line(tmp_path: Path, key: str,
                                                                    value, step: int) -> None:
    """Well-formed JSON with a field of the wrong shape (a bounds that is a list, an
    action that is a string, a step out of range...)."""
    from kvmctx.cli.cmd_check import policy_from_ref

    if not CEX:
        CEX.append(_cex_bytes(tmp_path))
    data = json.loads(CEX[0])
    if key == "steps" and isinstance(value, int):
        data["steps"][step % len(data["steps"])]["action"][step % 3] = value
    elif key == "bounds" and isinstance(value, dict):
        data["bounds"].update(value)
    elif key == "bounds" and isinstance(value, int):
        data["bounds"][("cpus", "vcpus", "sve_tasks")[step % 3]] = value   # e.g. 2**70 CPUs
    else:
        data[key] = value
    p = tmp_path / "cex.json"
    p.write_text(json.dumps(data))
    try:
        d = ST.load_cex(p)
        pol, _ = policy_from_ref(d["policy"])
        b = CK.Bounds.from_dict(d["bounds"])
        ST.replay(Model(b.config(), pol), [tuple(s["action"]) for s in d["steps"]], b.features)
    except ST.CexError as e:
        one_line(str(e))
    except (KeyError, TypeError, ValueError) as e:
        one_line(f"{p}: malformed: {e}")
