#!/usr/bin/env python3
"""The core's model check (tests/unit/test_core_model.py) with many more examples
than CI runs, and a pure replay of plain event sequences as the baseline: how many
interleavings were checked and what one costs, next to a step of the core alone.

Usage: python3 bench/model_check.py [EXAMPLES]   (default 20000; CI runs 200)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from common import REPO, stacks

from pistop_mdns import core
from pistop_mdns.model import Heartbeat, PlanFinished, ServerAd, ServerGone, ServerSeen, Started, Tick


def baseline_steps(n: int) -> float:
    """Seconds per core.step on a plain bring-up / heartbeat / leave cycle."""
    s = core.Settings(hostname="kitchen", mountpoint="/mnt/music", local_networks=("198.18.0.0/24",))
    ad = ServerAd(name="musicpi._pistop._tcp.local.", instance="musicpi", host="musicpi.local.",
                  addresses=("198.18.0.11",), port=5555, export="/srv/music", nfsvers="4", mpd_port=6600,
                  music="", state="up", boot="b1", version="0.1.0", proto=1)
    state, _, _ = core.step(core.State(), Started(0.0), s)
    steps = 0
    t = 0.0
    start = time.perf_counter()
    while steps < n:
        t += 100.0
        state, plan, _ = core.step(state, ServerSeen(t, ad), s)
        state, _, _ = core.step(state, PlanFinished(t + 1, plan.id, True), s)
        for i in range(5):
            state, _, _ = core.step(state, Heartbeat(t + 2 + i, ad.name), s)
        state, _, _ = core.step(state, ServerGone(t + 8, ad.name), s)
        state, plan, _ = core.step(state, Tick(t + 20), s)
        state, _, _ = core.step(state, PlanFinished(t + 21, plan.id, True), s)
        steps += 10
    return (time.perf_counter() - start) / steps


def main() -> None:
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    env = {**os.environ, "PISTOP_MODEL_EXAMPLES": str(examples), "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--hypothesis-show-statistics", "tests/unit/test_core_model.py"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=6 * 3600)
    took = time.monotonic() - start
    per_step = baseline_steps(20000)
    print(f"{stacks()}")
    print(f"model check: {examples} examples (up to 40 rules each, invariants after every step) "
          f"in {took:.0f} s: {'passed' if proc.returncode == 0 else 'FAILED'}")
    print(f"baseline: one core.step on a plain cycle takes {per_step * 1e6:.0f} us")
    if proc.returncode != 0:
        print(proc.stdout[-4000:])
        sys.exit(1)


if __name__ == "__main__":
    main()
