"""The other files users hand kvmctx, fuzzed like the trace reader: sweep specs,
cost profiles and counterexamples. Each mutated file is either accepted or
refused with the loader's own one-line error; nothing else escapes."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helpers import examples
from kvmctx import policies as P
from kvmctx.cli.cmd_check import replay_file
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


# Well-formed TOML values of the wrong kind or size, put in place of a value.
VALUES = [b"nan", b"inf", b"-inf", b"-1", b"0", b"1e300", b"1e-300", b"9223372036854775807",
          b"2.5", b"true", b"[]", b"[1]", b"{}", b"{start = 0, stop = inf}",
          b"{start = nan, stop = 1}", b"{start = 0, stop = 1e300, step = 1e-300}",
          b'"x"', b'""', b'"a\\u0000b"', b'"' + b"x" * 5000 + b'"', b'["' + b"y" * 300 + b'"]']


def mutate(base: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Cut, insert junk, duplicate, truncate, or replace a value at positions chosen
    by hypothesis."""
    b = bytearray(base)
    for op, pos, arg in edits:
        i = pos % (len(b) + 1)
        if op == 0:
            del b[i:i + 1 + arg % 40]                       # truncate a stretch
        elif op == 1:
            b[i:i] = JUNK[arg % len(JUNK)]                  # insert junk
        elif op == 2:
            b[i:i] = b[max(0, i - 1 - arg % 60):i]          # duplicate a stretch
        elif op == 3:
            b = b[:i]                                       # truncated file
        else:                                               # the next value, replaced
            j = b.find(b"= ", i)
            if j >= 0:
                end = b.find(b"\n", j)
                b[j + 2:end if end >= 0 else len(b)] = VALUES[arg % len(VALUES)]
    return bytes(b)


EDITS = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 10_000), st.integers(0, 10_000)),
                 min_size=1, max_size=6)
FUZZ = settings(max_examples=examples(150), deadline=None,
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
    if not CEX:
        CEX.append(_cex_bytes(tmp_path))
    p = tmp_path / "cex.json"
    p.write_bytes(mutate(CEX[0], edits))
    try:
        replay_file(p)
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
                           | st.sampled_from([0, 1, 2, 3, 4, 5, 255, 256, -1])
                           | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                           max_leaves=12)


@FUZZ
@given(st.sampled_from(["policy", "bounds", "steps", "violation", "format", "budgets", "depth",
                        "features"]), JSON_VALUES, st.integers(0, 50))
@example(key="bounds", value=0, step=0)   # issue 16: 0 CPUs, ZeroDivisionError in config()
def test_counterexamples_with_wrong_field_types_fail_with_one_line(tmp_path: Path, key: str,
                                                                    value, step: int) -> None:
    """Well-formed JSON with a field of the wrong shape (a bounds that is a list, an
    action that is a string, a step out of range...)."""
    if not CEX:
        CEX.append(_cex_bytes(tmp_path))
    data = json.loads(CEX[0])
    if key == "steps" and isinstance(value, int):
        data["steps"][step % len(data["steps"])]["action"][step % 3] = value
    elif key == "bounds" and isinstance(value, dict):
        data["bounds"].update(value)
    elif key == "bounds" and isinstance(value, int):
        data["bounds"][("cpus", "vcpus", "sve_tasks")[step % 3]] = value   # e.g. 2**70 CPUs
    elif key == "bounds":               # any other field of the bounds, any value
        data["bounds"][sorted(data["bounds"])[step % len(data["bounds"])]] = value
    elif key in ("budgets", "depth", "features"):
        data["bounds"][key] = value
    elif key == "policy" and isinstance(value, dict):
        data["policy"].update(value)
    else:
        data[key] = value
    p = tmp_path / "cex.json"
    p.write_text(json.dumps(data))
    try:
        replay_file(p)
    except ST.CexError as e:
        one_line(str(e))
    except (KeyError, TypeError, ValueError) as e:
        one_line(f"{p}: malformed: {e}")


# ------------------------------------------------------------ pinned regressions
# Each hole the fuzz tests (or a review of the same class of bug) found, as a plain
# test: the field's value, and the words the one-line error must contain.


def _cex_with(tmp_path: Path, field: str, value, name: str = "cex.json") -> Path:
    if not CEX:
        CEX.append(_cex_bytes(tmp_path))
    data = json.loads(CEX[0])
    if field.startswith("bounds."):
        data["bounds"][field.split(".", 1)[1]] = value
    else:
        data[field] = value
    p = tmp_path / name
    p.write_text(json.dumps(data))      # json.dumps writes inf as Infinity, as Python reads it
    return p


def _replay_cli(path: Path):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "kvmctx", "replay", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_replay_of_a_cex_with_0_cpus_is_exit_2_naming_the_field(tmp_path: Path) -> None:
    """Issue 16: ZeroDivisionError in Bounds.config, exit status 1 ("reproduced")."""
    r = _replay_cli(_cex_with(tmp_path, "bounds.cpus", 0))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "bounds.cpus = 0" in r.stderr and "1..4" in r.stderr


def test_replay_of_a_cex_naming_an_unknown_policy_names_the_file(tmp_path: Path) -> None:
    path = _cex_with(tmp_path, "policy", {"name": "no-such-design"})
    r = _replay_cli(path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert str(path) in r.stderr and "'no-such-design'" in r.stderr


def test_replay_of_a_cex_whose_violation_is_not_an_object_is_exit_2(tmp_path: Path) -> None:
    """The claimed violation was read after the error handling: AttributeError."""
    for i, v in enumerate(([1], "x", {"invariant": [1]})):
        r = _replay_cli(_cex_with(tmp_path, "violation", v, f"cex{i}.json"))
        assert r.returncode == 2, (v, r.stderr)
        assert "Traceback" not in r.stderr and "'violation'" in r.stderr


BAD_CEX_FIELDS = [
    ("bounds.cpus", 0, ["bounds.cpus", "1..4"]),
    ("bounds.cpus", 5, ["bounds.cpus", "1..4"]),
    ("bounds.vcpus", 4, ["bounds.vcpus", "0..3"]),
    ("bounds.sve_tasks", -1, ["bounds.sve_tasks", "0..4"]),
    ("bounds.fpsimd_tasks", 2**70, ["bounds.fpsimd_tasks", "0..8"]),
    ("bounds.cpus", True, ["bounds.cpus"]),
    ("bounds.budgets", {"switch": float("inf")}, ["bounds.budgets.switch", "0..200"]),  # was
    ("bounds.budgets", {"switch": 256}, ["bounds.budgets.switch", "0..200"]),   # OverflowError
    ("bounds.budgets", {"nope": 1}, ["unknown class 'nope'", "switch"]),
    ("bounds.budgets", [["switch", 1]], ["bounds.budgets"]),
    ("bounds.depth", 0, ["bounds.depth", "1..1000000"]),
    ("bounds.depth", "x", ["bounds.depth"]),
    ("bounds.depth", float("inf"), ["bounds.depth"]),
    ("bounds.features", "sve", ["bounds.features", "list"]),
    ("bounds.features", 5, ["bounds.features"]),
    ("bounds.features", ["nope"], ["unknown feature 'nope'", "softirq-neon"]),
    ("bounds.sysregs", [1], ["bounds.sysregs", "deferred-stale"]),
    ("bounds.vhe", [1], ["bounds.vhe"]),
    ("bounds.name", ["x"], ["bounds.name"]),
    ("bounds.name", "a\nb", ["bounds.name"]),
    ("bounds.cpu", 2, ["unknown field 'cpu'"]),
    ("policy", {"name": "x", "mutant": [1]}, ["'policy'"]),
    ("policy", {"policy_file": "x" * 5000}, ["too long"]),   # was OSError from is_file()
    ("violation", [1], ["'violation'"]),
]


def test_cex_fields_out_of_range_are_one_line_errors(tmp_path: Path) -> None:
    for i, (field, value, words) in enumerate(BAD_CEX_FIELDS):
        p = _cex_with(tmp_path, field, value, f"cex{i}.json")
        try:
            replay_file(p)
        except ST.CexError as e:
            one_line(str(e))
            assert all(w in str(e) for w in words), (field, value, str(e))
        else:
            raise AssertionError(f"{field} = {value!r} was accepted")


def test_every_named_bounds_round_trips_through_a_cex_file() -> None:
    """The file's ranges are the CLI's: whatever check writes, replay reads."""
    from kvmctx.catalogue import mutants as MU

    MU.load_all()
    for b in CK.BOUNDS.values():
        for name in P.names():
            a, _ = CK.adapt_bounds(b, P.get(name).supports)
            assert CK.Bounds.from_dict(a.as_dict()).as_dict() == a.as_dict()


def test_check_refuses_sizes_a_cex_file_could_not_hold() -> None:
    from typer.testing import CliRunner

    from kvmctx.cli.main import app

    for args, words in ((["--sve-tasks", "-1"], "--sve-tasks -1 is not in 0..4"),
                        (["--sve-tasks", "9"], "--sve-tasks 9 is not in 0..4"),
                        (["--tasks", "2", "--sve-tasks", "-1"], "--sve-tasks -1"),
                        (["--depth", "0"], "--depth 0 is not in 1..1000000"),
                        (["--cpus", "0"], "--cpus 0 is not in 1..4")):
        r = CliRunner().invoke(app, ["check", "--bounds", "small", *args])
        assert r.exit_code == 2, (args, r.output)
        assert words in r.output, (args, r.output)


SPEC_TEXT = SPEC.decode()


def _spec(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "spec.toml"
    p.write_text(text)
    return p


BAD_SPECS = [
    # grid ranges: nan / inf reached int(math.floor(...)): ValueError, OverflowError
    ("[grid]\nguest_fp = {start = nan, stop = 1, step = 0.1}", "finite numbers"),
    ("[grid]\nguest_fp = {start = 0, stop = inf, step = 0.1}", "finite numbers"),
    ("[grid]\nguest_fp = {start = 0, stop = 1e300, step = 1e-300}", "too many values"),
    # an int knob of inf: int(inf) is an OverflowError, not a ValueError
    ("[grid]\nvl = inf", "grid.vl"),
    ("[grid]\nphase_len = -inf", "grid.phase_len"),
]


def test_sweep_spec_holes_are_one_line_errors(tmp_path: Path) -> None:
    head = SPEC_TEXT.split("[grid]")[0]
    for grid, words in BAD_SPECS:
        with_grid = head + grid + "\n"
        try:
            load_spec(_spec(tmp_path, with_grid))
        except SpecError as e:
            one_line(str(e))
            assert words in str(e), (grid, str(e))
        else:
            raise AssertionError(f"accepted: {grid}")
    base = head.replace('scenarios = ["default"]\n', "")
    for line, words in (
            ('traces = ["' + "x" * 5000 + '"]', "sweep.traces"),     # OSError ENAMETOOLONG
            ('traces = ["a\\u0000b"]', "sweep.traces"),              # ValueError: NUL byte
    ):
        try:
            load_spec(_spec(tmp_path, base.replace("[sweep]\n", "[sweep]\n" + line + "\n")))
        except SpecError as e:
            one_line(str(e))
            assert words in str(e)
        else:
            raise AssertionError(f"accepted: {line[:40]}")
    for prof in ("a\\u0000b", "y" * 5000):
        text = head.replace('cost_profile = "xgene-nvhe"', f'cost_profile = "{prof}"')
        try:
            load_spec(_spec(tmp_path, text))
        except SpecError as e:
            one_line(str(e))
            assert "sweep.cost_profile" in str(e)
        else:
            raise AssertionError(f"accepted: {prof[:40]}")


def test_a_huge_grid_is_refused_before_its_points_are_built(tmp_path: Path) -> None:
    """10^5 seeds x 10^4 x 10^4 knob values: counted, not materialised (it hung)."""
    import time

    text = (SPEC_TEXT.split("[grid]")[0].replace("seeds = 4 ", "seeds = 100000 ")
            + "[grid]\nguest_fp = {start = 0, stop = 0.9999, step = 0.0001}\n"
            "burst = {start = 0, stop = 0.9999, step = 0.0001}\n")
    t0 = time.perf_counter()
    try:
        load_spec(_spec(tmp_path, text))
    except SpecError as e:
        one_line(str(e))
        assert "at most 5,000,000" in str(e)
    else:
        raise AssertionError("accepted")
    assert time.perf_counter() - t0 < 30


def test_a_sweep_directory_whose_spec_json_is_not_an_object_is_refused(tmp_path: Path) -> None:
    from kvmctx.engines.sweep import prepare_dir

    spec = load_spec(ROOT / "examples" / "sweep.toml")
    (tmp_path / "spec.json").write_text("[1]")
    try:
        prepare_dir(tmp_path, spec)          # was AttributeError: 'list' has no .get
    except SpecError as e:
        one_line(str(e))
        assert "unreadable" in str(e)
    else:
        raise AssertionError("accepted")


def test_cost_profile_holes_are_one_line_errors(tmp_path: Path) -> None:
    text = PROFILE.decode()
    for old, new, words in (("value = 282", "value = nan", "costs.fpsimd_save.value"),
                            ("value = 282", "value = inf", "costs.fpsimd_save.value"),
                            ("value = 282", "value = 1e10", "costs.fpsimd_save.value"),
                            ('mark = "r"', 'mark = ["r"]', "costs.fpsimd_save.mark"),
                            ('mark = "r"', "mark = {}", "costs.fpsimd_save.mark")):
        p = tmp_path / "profile.toml"
        p.write_text(text.replace(old, new, 1))
        try:
            load_profile(str(p))
        except ProfileError as e:
            one_line(str(e))
            assert words in str(e), (new, str(e))
        else:
            raise AssertionError(f"accepted: {new}")
    try:
        load_profile("z" * 5000)                  # was OSError from Path.exists()
    except ProfileError as e:
        one_line(str(e))
    else:
        raise AssertionError("accepted")
