import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

# Hypothesis profiles (docs/checker.md, "Fuzzing"):
#   ci   - derandomized: the examples are a function of the test, so a commit
#          passes or fails the same way on every clone; loaded when CI is set.
#   fuzz - broad randomised search, many more examples (scripts/fuzz); every
#          failure it finds becomes a pinned regression test.
#   dev  - hypothesis' defaults (random examples, the local example database).
# HYPOTHESIS_PROFILE picks one explicitly. Tests that set their own
# max_examples take max(theirs, the profile's) through helpers.examples().
# Each built on hypothesis' defaults, not on whatever profile is loaded now
# (hypothesis itself loads a "ci" profile of its own when CI is set at all).
_base = settings.get_profile("default")
settings.register_profile("ci", _base, derandomize=True, database=None, print_blob=True,
                          deadline=None)
settings.register_profile("fuzz", _base, max_examples=2000, deadline=None, print_blob=True)
settings.register_profile("dev", _base)


def _profile() -> str:
    chosen = os.environ.get("HYPOTHESIS_PROFILE")
    if chosen:
        return chosen
    ci = os.environ.get("CI", "").strip().lower()
    return "ci" if ci and ci not in ("0", "false", "no") else "dev"


if _profile() not in ("ci", "fuzz", "dev"):
    raise pytest.UsageError(f"HYPOTHESIS_PROFILE={_profile()!r}; valid: ci, fuzz, dev")
settings.load_profile(_profile())
