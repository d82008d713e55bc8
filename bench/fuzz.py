#!/usr/bin/env python3
"""The protocol fuzz suite, long run: the CI slice's LAN and inputs (tests/lan/fuzzing.py)
with CASES generated inputs, next to the same processes with no fuzz in the same run.

  1. baseline: the LAN up, QUIET seconds with no input at all (the boards' dials to
     the rogue's fake servers, plans, the servers' lost clients are counted), then
     both real servers stopped and started again (the boards' tear-down and bring-up
     timed);
  2. fuzz: the 10 fixed inputs, then CASES generated ones (half mDNS datagrams, a
     quarter channel scripts to the servers, a quarter to the boards), every
     invariant checked after each;
  3. after: the boards met every script queued for them and dial again, then the
     real servers are stopped and started again, timed as in 1.

Usage: sudo python3 bench/fuzz.py [CASES] [QUIET]   (defaults 1000 and 60)
       sudo python3 bench/fuzz.py --replay INPUTS.LOG [QUIET]
Prints a Markdown section for BENCHMARKS.md; exit status 1 when an invariant broke
(the inputs and every process's output are in the temporary directory it names;
--replay sends such a file's inputs again, in order, instead of generated ones).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from common import stacks

TMP = Path(tempfile.mkdtemp(prefix="pistop-fuzz-"))
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(TMP / "hypothesis"))  # not in the checkout

from tests.lan import fuzzing  # noqa: E402  (after the line above)


def snapshot(fz: fuzzing.FuzzLan) -> dict:
    return {
        "porch dials": fz.porch_chan.connections(),
        "hall dials": fz.hall_chan.connections(),
        **{f"{name} plans": out.count(r"plan \d+ step 1/") for name, out in fz.boards.items()},
        "real boards lost by the servers": sum(out.count(r"client (kitchen|bedroom) .*disconnected")
                                               for out in fz.servers.values()),
    }


def rates(before: dict, after: dict, seconds: float) -> dict:
    return {k: (after[k] - before[k], (after[k] - before[k]) * 60 / seconds) for k in before}


def main() -> int:
    args = sys.argv[1:]
    replay = None
    if args[:1] == ["--replay"]:
        replay, args = args[1], args[2:]
    cases = int(args.pop(0)) if args and replay is None else 1000
    quiet = float(args.pop(0)) if args else 60.0
    tmp = TMP
    log = open(tmp / "inputs.log", "w")

    def note(text: str) -> None:
        log.write(text + "\n")
        log.flush()

    t0 = time.monotonic()
    fz = fuzzing.FuzzLan(tmp, log=note)
    setup = time.monotonic() - t0
    stats = fuzzing.Stats()
    fixed = len(fuzzing.anchors(fz))
    failure = ""
    try:
        fz.check()
        s0, q0 = snapshot(fz), time.monotonic()
        time.sleep(quiet)
        fz.check()
        quiet_rates = rates(s0, snapshot(fz), time.monotonic() - q0)
        before = fz.cycle()
        fz.mark()
        s1, f0 = snapshot(fz), time.monotonic()
        try:
            if replay is None:
                fuzzing.run(fz, cases, stats)
            else:
                for item in fuzzing.logged(replay):
                    fz.send(item, stats)
                    fz.check()
        finally:
            fuzz_seconds = time.monotonic() - f0
            fuzz_rates = rates(s1, snapshot(fz), fuzz_seconds)
        met = {b: c.served_from_queue() for b, c in fz.chans.items()}
        after = fz.finish()
    except Exception as e:  # a broken invariant: report it with what led to it
        failure = f"{type(e).__name__}: {str(e)[:2000]}"
        traceback.print_exc()
        fz.dump(tmp)
    finally:
        fz.close()
        log.close()

    total = sum(stats.kinds.values())
    print(f"\n{stacks()}; {time.strftime('%Y-%m-%d')}; LAN up in {setup:.0f} s; whole run "
          f"{time.monotonic() - t0:.0f} s; inputs in {tmp}/inputs.log\n")
    if failure:
        print(f"FAILED after {total} inputs: {failure}")
        return 1
    print(f"{total} inputs ({total - fixed} generated + {fixed} fixed) in "
          f"{fuzz_seconds:.0f} s ({total / fuzz_seconds:.1f} per second); every invariant held after each.\n")
    print("| input | kind | count |\n|---|---|---|")
    for (family, kind), n in sorted(stats.kinds.items()):
        print(f"| {family} | {kind} | {n} |")
    print(f"\nChannel scripts met by the boards: porch {met['porch']} of {fz.queued['porch']}, "
          f"hall {met['hall']} of {fz.queued['hall']} when the fuzz ended; connections closed by the servers: "
          + ", ".join(f"{k} {v} of {stats.kinds_by_target(k)}" for k, v in sorted(stats.closed_by_server.items()))
          + ".\n")
    print("| measured | no fuzz (baseline) | during the fuzz |\n|---|---|---|")
    for k in quiet_rates:
        print(f"| {k} | {quiet_rates[k][0]} in {quiet:.0f} s ({quiet_rates[k][1]:.1f}/min) | "
              f"{fuzz_rates[k][0]} in {fuzz_seconds:.0f} s ({fuzz_rates[k][1]:.1f}/min) |")
    print("\n| real servers stopped, then started | before the fuzz (baseline) | after the fuzz |\n|---|---|---|")
    missing = {"unkeyed board tears down": "was no longer up with attic (the fuzz had made it leave)",
               "unkeyed board up again": "not within 90 s"}
    for k in before:
        print(f"| {k} | {before[k] * 1000:.0f} ms | "
              + (f"{after[k] * 1000:.0f} ms |" if after[k] is not None else f"{missing[k]} |"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
