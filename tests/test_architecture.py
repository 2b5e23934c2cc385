"""Dependencies point down: the model is the bottom layer.

The model defines the policy interface (kvmctx.model.policy) and the
features; designs (kvmctx.policies), engines, the CLI and the I/O sit on top.
A model module importing any of them would make the one specification depend
on what is built on it."""

from __future__ import annotations

import ast
from pathlib import Path

import kvmctx

MODEL = Path(kvmctx.__file__).parent / "model"


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_the_model_imports_nothing_above_it() -> None:
    files = sorted(MODEL.rglob("*.py"))
    assert len(files) > 10
    bad = {f"{p.relative_to(MODEL.parent)}: {m}" for p in files for m in _imports(p)
           if (m == "kvmctx" or m.startswith("kvmctx.")) and not m.startswith("kvmctx.model")}
    assert not bad, sorted(bad)


def test_the_policy_interface_policies_import_is_the_models() -> None:
    from kvmctx.model import policy
    from kvmctx.policies import base

    assert base.Policy is policy.Policy and base.Step is policy.Step


def test_designs_do_not_import_the_catalogue() -> None:
    """The catalogue's mutants are built from designs (test data for the
    checker); a design that imported them would depend on its own faults."""
    designs = Path(kvmctx.__file__).parent / "policies"
    files = sorted(designs.glob("*.py"))
    assert len(files) > 8
    bad = {f"{p.name}: {m}" for p in files for m in _imports(p)
           if m.startswith("kvmctx.catalogue")}
    assert not bad, sorted(bad)
    assert not any(p.name.startswith("mutants") for p in files)
