"""The protocol fuzz suite's CI slice (issue 11 item 5): a few tens of random and
mutated mDNS datagrams and channel scripts, sent from a host without the key to a
keyed and an unkeyed server and board, all real processes on the simulated LAN
(tests/lan/fuzzing.py says which and what is checked). bench/fuzz.py runs the same
for longer. PISTOP_FUZZ_CASES sets the number of generated inputs (default 40, plus 10 fixed ones).

Every input is written to inputs.log in the test's temporary directory (one JSON
object a line; `bench/fuzz.py --replay FILE` sends them again in order), and on a
failure every process's output too. The failing input is the last line or one
shortly before (an action a board takes later than at once shows up in a later
check).
"""

from __future__ import annotations

import os

import pytest

from tests.helpers import need, need_root
from tests.lan import fuzzing

pytestmark = pytest.mark.lan
CASES = int(os.environ.get("PISTOP_FUZZ_CASES", "40"))


def test_fuzzed_mdns_and_channel_input_moves_no_keyed_board_and_stops_no_loop(tmp_path):
    need_root()
    need("ip", "nsenter", "unshare", package="iproute2 util-linux")
    stats = fuzzing.Stats()
    with open(tmp_path / "inputs.log", "w") as log:
        def note(text: str) -> None:
            log.write(text + "\n")
            log.flush()

        fz = fuzzing.FuzzLan(tmp_path, log=note)
        try:
            fuzzing.run(fz, CASES, stats)
            fz.finish()
        except BaseException:
            fz.dump(tmp_path)  # every process's output next to inputs.log
            raise
        finally:
            fz.close()
    print(f"fuzz: {sum(stats.kinds.values())} inputs: "
          + ", ".join(f"{family} {kind} {n}" for (family, kind), n in sorted(stats.kinds.items())))
