#!/usr/bin/env python3
"""The house on two real Debian 12 guests (issue 12), each figure next to doing
the same by hand in the same guests, in the same run.

The guests, the .deb and the house are those of the system tier
(tests/system/house.py): musicpi exports /MDrive over kernel NFS and runs mpd,
kitchen follows it in autofs mode, mpd with a null output. All times are the
host's clock; a guest is asked through its 9p runner, whose round trip (a few
hundred ms under TCG) is part of every figure, by hand and not alike.

  server start -> board plays: `systemctl start pistop-mdns-server` on a
      server whose NFS and mpd run -> kitchen's mpd says [playing] (it resumes
      the song its tear-down stopped). By hand: kitchen's client stopped, the
      admin's script on kitchen (start autofs, look into the share, start mpd;
      the map and mpd.conf already name the server's address).
  cable pulled -> ls returns: the server's tap set down -> the first
      `timeout 1 ls -A /var/lib/mpd/MDrive` on kitchen that answers (empty or
      "No such file") with the share gone from mountinfo. By hand: kitchen's client stopped, the admin types the
      tear-down pistop-mdns now runs, at the moment the cable goes; and once,
      pistop's old order (stop mpd, umount -f, stop autofs), capped.
  pistop-mdns shutdown -> board off -> server off: kitchen with power_off;
      qemu's exit is the power-off. By hand: `systemctl poweroff` on kitchen,
      and on musicpi once kitchen is off.

Usage: sudo /usr/bin/python3 bench/system.py [ROUNDS]   (default 3; the
shutdown once). Needs what the system tier needs; takes about 30 minutes.
"""

from __future__ import annotations

import re
import sys
import time

from common import HEADER, row, stacks

from tests.system.house import BRING_UP_TIMEOUT, DEAD_TIME, MOUNTPOINT, UP, House, music_house

PLAYING = "mpc status | grep -q '^\\[playing\\]'"
# An answer from the dead share's cache does not count: the mount must be gone too.
LOOK = f"timeout 1 ls -A {MOUNTPOINT}; echo rc=$?; grep -q ' {MOUNTPOINT} ' /proc/self/mountinfo && echo mounted"
TORN_DOWN = r"kitchen: (told|could not tell) the server this board is down"
OLD_ORDER_CAP = 90.0

BY_HAND_UP = f"""systemctl start autofs
ls {MOUNTPOINT}/Music > /dev/null
systemctl start mpd
"""
# kitchen with nothing running and nothing mounted, its map entry in (between rounds).
RESET_BOARD = f"""sed -i 's/^#MDrive /MDrive /' /etc/autofs.mounts
systemctl stop mpd.service mpd.socket
if grep -q ' {MOUNTPOINT} ' /proc/self/mountinfo; then umount -i -f -l {MOUNTPOINT}; fi
systemctl stop autofs
"""
# What the client now does for a server that cannot answer (core.py, machine.py);
# autofs runs on, without the entry.
BY_HAND_UNREACHABLE = f"""systemctl --no-block stop mpd.service mpd.socket
sed -i 's/^MDrive /#MDrive /' /etc/autofs.mounts
umount -i -f -l {MOUNTPOINT} &
for i in $(seq 100); do grep -q ' {MOUNTPOINT} ' /proc/self/mountinfo || break; sleep 0.1; done
"""
OLD_ORDER = f"""systemctl stop mpd.service mpd.socket
umount -f {MOUNTPOINT}
systemctl stop autofs.service
"""


def until(guest, script: str, done, timeout: float) -> float | None:
    """Run `script` in the guest again and again until done(output): the host time of
    that answer, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = guest.sh(script, timeout=30, check=False)
        if done(result):
            return time.monotonic()
    return None


def seconds_until(guest, script: str, done, timeout: float, since: float, what: str) -> float:
    answered = until(guest, script, done, timeout)
    if answered is None:
        raise SystemExit(f"{guest.name}: {what} not within {timeout:g} s")
    return answered - since


def answers(result) -> bool:
    m = re.search(r"rc=(\d+)", result.out)
    return m is not None and int(m.group(1)) in (0, 2) and "mounted" not in result.out


def answered(seconds: float | None) -> float:
    if seconds is None:
        raise SystemExit("ls of the mount point did not answer within the cap")
    return seconds


def board_up(house: House) -> None:
    after = house.board.cursor()
    house.board.guest.sh("systemctl start pistop-mdns-client", timeout=240)
    house.board.wait_log(UP, after, BRING_UP_TIMEOUT)


def server_start_to_music(house: House) -> tuple[float, float]:
    board, server = house.board, house.server
    board.assert_plays()
    after = board.cursor()
    server.sh("systemctl stop pistop-mdns-server", timeout=120)
    board.wait_log(TORN_DOWN, after, 120)
    asked = time.monotonic()
    server.sh("systemctl start pistop-mdns-server", timeout=120)
    pistop = seconds_until(board.guest, PLAYING, lambda r: r.rc == 0, BRING_UP_TIMEOUT, asked, "music")
    # by hand, the same guests: the client out of the way, the board torn down
    board.guest.sh("systemctl stop pistop-mdns-client\n" + RESET_BOARD, timeout=240)
    asked = time.monotonic()
    board.guest.sh(BY_HAND_UP, timeout=240)
    by_hand = seconds_until(board.guest, PLAYING, lambda r: r.rc == 0, BRING_UP_TIMEOUT, asked, "music by hand")
    board.guest.sh(RESET_BOARD, timeout=240)
    board_up(house)
    return pistop, by_hand


def cable_to_ls(house: House, by_hand_script: str | None, cap: float = 120) -> float | None:
    """Pull the server's cable; seconds until `ls` of the mount point answers (None: not
    within `cap`). With a script, kitchen's client is stopped first and the script
    runs at the pull."""
    board, bed = house.board, house.bed
    board.assert_plays()
    if by_hand_script:
        board.guest.sh("systemctl stop pistop-mdns-client", timeout=240)
    after = board.cursor()
    pulled = time.monotonic()
    bed.pull_cable(house.server)
    try:
        if by_hand_script:
            board.guest.sh(by_hand_script, timeout=cap, check=False)
        answered = until(board.guest, LOOK, answers, max(1.0, pulled + cap - time.monotonic()))
        if not by_hand_script:
            board.wait_log(TORN_DOWN, after, 60)
    finally:
        bed.plug_cable(house.server)
    if by_hand_script:
        board.guest.sh(RESET_BOARD, timeout=240, check=False)  # whatever is left, now that the server answers
        board_up(house)
    else:
        board.wait_log(UP, after, BRING_UP_TIMEOUT)
    return None if answered is None else answered - pulled


def shutdowns(house: House) -> tuple[tuple[float, float], tuple[float, float]]:
    board, server = house.board, house.server
    after = board.cursor()
    board.set_up("autofs", power_off=True)
    board.wait_log(UP, after, BRING_UP_TIMEOUT)
    board.assert_plays()
    asked = time.monotonic()
    server.submit("pistop-mdns shutdown", timeout=300)
    pistop = (board.guest.wait_off(300) - asked, server.wait_off(300) - asked)
    house.bed.boot_all()  # the same disks
    board.wait_log(UP, None, BRING_UP_TIMEOUT)
    board.assert_plays()
    asked = time.monotonic()
    board.guest.submit("systemctl poweroff", timeout=300)
    board_off = board.guest.wait_off(300)
    server.submit("systemctl poweroff", timeout=300)
    by_hand = (board_off - asked, server.wait_off(300) - asked)
    return pistop, by_hand


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    start, start_hand, cable, cable_hand = [], [], [], []
    with music_house(say=lambda text: print(text, file=sys.stderr)) as house:
        house.board.wait_log(UP, None, BRING_UP_TIMEOUT)
        for i in range(rounds):
            pistop, by_hand = server_start_to_music(house)
            start.append(pistop)
            start_hand.append(by_hand)
            cable.append(answered(cable_to_ls(house, None)))
            cable_hand.append(answered(cable_to_ls(house, BY_HAND_UNREACHABLE)))
            print(f"round {i + 1}: start {pistop:.1f}/{by_hand:.1f} s, cable {cable[-1]:.1f}/{cable_hand[-1]:.1f} s",
                  file=sys.stderr)
        old = cable_to_ls(house, OLD_ORDER, cap=OLD_ORDER_CAP)
        (board_off, server_off), (board_off_hand, server_off_hand) = shutdowns(house)
    print(f"## The house on two Debian 12 guests ({stacks()}; guests: Debian's own stack)\n")
    print(HEADER)
    print(row("server start -> board plays, by hand (baseline)", start_hand))
    print(row("server start -> board plays, pistop-mdns", start, start_hand))
    print(row("cable pulled -> ls answers, tear-down typed at the pull (baseline)", cable_hand))
    print(row(f"cable pulled -> ls answers, pistop-mdns (dead_time {DEAD_TIME:g} s)", cable, cable_hand))
    if old is not None:
        print(row("cable pulled -> ls answers, old order by hand (stop mpd, umount -f, stop autofs)", [old],
                  cable_hand))
    else:
        print(f"| cable pulled -> ls answers, old order by hand | 1 | not within {OLD_ORDER_CAP:g} s | | | |")
    print(row("shutdown: board off, by hand (systemctl poweroff) (baseline)", [board_off_hand]))
    print(row("shutdown: board off, pistop-mdns shutdown", [board_off], [board_off_hand]))
    print(row("shutdown: server off, by hand, after the board (baseline)", [server_off_hand]))
    print(row("shutdown: server off, pistop-mdns shutdown", [server_off], [server_off_hand]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
