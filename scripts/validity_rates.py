"""Print the rejection rates of the statistical validity suite's simulated worlds (docs/statistics.md).

The suite (``tests/test_statistical_validity.py``) asserts bounds on these rates; this prints the
rates themselves, with the suite's own seeds and study functions, so the numbers the docs quote
come from a committed command::

    python scripts/validity_rates.py                  # the selected null design's three worlds
    python scripts/validity_rates.py --worlds all     # and the max-statistic design's (slower)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402

import test_statistical_validity as suite  # noqa: E402

#: world name -> its simulated studies, with the seeds the tests use
SELECTED = {
    "selected, emotion-only model": lambda: [suite._selected_study(g, "emotion_only") for g in _runs(18)],
    "selected, planted signal": lambda: [suite._selected_study(g, "planted") for g in _runs(19)],
    "selected, random-init tiny Llamas": lambda: suite._tiny_studies(suite.RUNS, design="selected"),
}
EVERY = {
    "every, pure noise": lambda: [suite._noise_study(g) for g in _runs(12)],
    "every, emotion-only model": lambda: [suite._study(g, "emotion_only") for g in _runs(13)],
    "every, planted signal": lambda: [suite._study(g, "planted") for g in _runs(14)],
    "every, random-init tiny Llamas": lambda: suite._tiny_studies(suite.RUNS),
}


def _runs(seed: int):
    """The suite's ``RUNS`` studies, drawn in turn from one generator seeded as its test seeds it."""
    g = np.random.default_rng(seed)
    for _ in range(suite.RUNS):
        yield g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", choices=["selected", "all"], default="selected")
    args = ap.parse_args()
    worlds = {**SELECTED, **(EVERY if args.worlds == "all" else {})}
    print(f"rejection rate at alpha {suite.ALPHA} over {suite.RUNS} simulated studies "
          f"(a null world passes at <= {suite.ALPHA + suite.SLACK:.3f})")
    for name, studies in worlds.items():
        rate = suite._rejection(studies())
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in rate.items()))


if __name__ == "__main__":
    main()
