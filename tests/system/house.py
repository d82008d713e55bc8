"""The music house of the pistop README, on two real machines.

musicpi (the server) exports /MDrive (Music, data, playlists, cache) with the
kernel's NFS server and runs Debian's mpd on it; kitchen (a room board) has
the pistop layout: /etc/auto.master.d/mpd.autofs -> /etc/autofs.mounts with
`MDrive -fstype=nfs,vers=4,soft,timeo=5,retry=1 MusicPI:/MDrive`, and an
mpd.conf whose proxy block names MusicPI, a name nothing resolves. Both get
the .deb with apt and `pistop-mdns install-service` as a user would. Audio
goes to mpd's null output.

`music_house()` builds it: the guest image (cached, image.py), the .deb from
this checkout, a song made with sox; boots both guests and sets them up in
parallel. Whatever happens -- a failure, Ctrl-C, SIGTERM -- the Testbed is
taken down: guests killed by PID, the bridge namespace and the work
directory removed. Every wait is bounded; journal lines are read after a
cursor, so a scenario sees only what happened since it began.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers import need, need_root
from tests.packaging.support import build_deb, debian_mirror, remove_tree
from tests.system.image import guest_image
from tests.system.machines import Guest, GuestError, Testbed

SERVER_ADDRESS = "198.18.0.11"
BOARD_ADDRESS = "198.18.0.12"
MOUNTPOINT = "/var/lib/mpd/MDrive"
SONG = "TestBed/tone.flac"  # under Music
SONG_SECONDS = 180
DEAD_TIME = 10.0  # [client] dead_time, left at its default
CONFIG = "/etc/pistop-mdns/pistop-mdns.toml"
UP = "kitchen: up with musicpi"
# A board under TCG on a busy host: bring-up takes 20-60 s (mpd's start alone up to 15 s).
BRING_UP_TIMEOUT = 240

# `insecure`: in mpd mode the board's mpd, running as user mpd, reads the share
# over NFSv3 from an unprivileged port; without it mountd answers MNT3ERR_ACCES
# (while the ready check, run as root, passes).
EXPORTS = "/MDrive 198.18.0.0/24(rw,async,no_root_squash,no_subtree_check,insecure)\n"

SERVER_MPD_CONF = """music_directory "/MDrive/Music"
playlist_directory "/MDrive/playlists"
db_file "/MDrive/cache/database"
state_file "/var/lib/mpd/state"
log_file "syslog"
user "mpd"
bind_to_address "any"
port "6600"
zeroconf_enabled "no"
audio_output {
    type "null"
    name "null"
}
"""

# The state file is not under /var/lib/mpd: autofs mounts over that directory.
BOARD_MPD_CONF = """# kitchen: music comes from the server
music_directory "/var/lib/mpd/MDrive/Music"
playlist_directory "/var/cache/mpd/playlists"
state_file "/var/cache/mpd/state"
log_file "syslog"
user "mpd"
bind_to_address "localhost"
port "6600"
zeroconf_enabled "no"
database {
    plugin "proxy"
    host "MusicPI"
    port "6600"
}
audio_output {
    type "null"
    name "null"
}
"""

INSTALL = "apt-get install -y -q --no-install-recommends {deb}"

SERVER_SETUP = f"""set -e
mkdir -p /MDrive/Music/TestBed /MDrive/data /MDrive/playlists /MDrive/cache
cp /mnt/share/tone.flac /MDrive/Music/{SONG}
touch /MDrive/data/stats.db
chown -R mpd:audio /MDrive/playlists /MDrive/cache
cat > /etc/exports <<'EOF'
{EXPORTS}EOF
cat > /etc/mpd.conf <<'EOF'
{SERVER_MPD_CONF}EOF
systemctl disable --now autofs
systemctl enable --now nfs-server mpd
mpc -q update --wait
mpc listall | grep -qx {SONG}
"""

BOARD_SETUP = f"""set -e
mkdir -p /etc/auto.master.d /var/cache/mpd/playlists
chown -R mpd:audio /var/cache/mpd
echo "/var/lib/mpd /etc/autofs.mounts --timeout=60" > /etc/auto.master.d/mpd.autofs
echo "MDrive -fstype=nfs,vers=4,soft,timeo=5,retry=1 MusicPI:/MDrive" > /etc/autofs.mounts
cat > /etc/mpd.conf <<'EOF'
{BOARD_MPD_CONF}EOF
cp /etc/mpd.conf /etc/mpd.conf.house
systemctl restart autofs
"""


@dataclass
class Elapsed:
    playing: bool
    seconds: int | None


def parse_status(out: str) -> Elapsed:
    """`mpc status` -> whether it plays and the elapsed seconds (`[playing] #1/1   0:03/3:00 (1%)`)."""
    m = re.search(r"^\[(\w+)\]\s+#\d+/\d+\s+(\d+):(\d+)/", out, re.M)
    if not m:
        return Elapsed(False, None)
    return Elapsed(m.group(1) == "playing", int(m.group(2)) * 60 + int(m.group(3)))


class Board:
    """kitchen, with the pistop-mdns client: what the scenarios ask of it."""

    def __init__(self, guest: Guest):
        self.guest = guest

    def cursor(self) -> str:
        """Where the client's journal stands now. The cursor of one of its own entries:
        journalctl --after-cursor with -u skips the first matching entry when the
        cursor's own entry does not match (systemd 252)."""
        out = self.guest.sh("journalctl -u pistop-mdns-client -n 1 -o cat --show-cursor -q", timeout=60).out
        m = re.search(r"-- cursor: (\S+)", out)
        if not m:
            raise GuestError(f"kitchen: no journal cursor in {out!r}")
        return m.group(1)

    def client_log(self, after: str | None, output: str = "cat") -> str:
        """What the client logged after the journal cursor (`after` None: since boot);
        `output` "short-monotonic" puts the guest's uptime before each line."""
        since = f"--after-cursor='{after}'" if after else "-b"
        return self.guest.sh(f"journalctl -u pistop-mdns-client {since} -o {output} -q --no-pager",
                             timeout=60).out

    def uptime(self) -> float:
        return float(self.guest.sh("cut -d' ' -f1 /proc/uptime", timeout=60).out)

    def wait_log(self, pattern: str, after: str | None, timeout: float) -> str:
        """Wait until the client logged a line matching `pattern` after the cursor; the log so far."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.client_log(after)
            if re.search(pattern, log, re.M):
                return log
            if time.monotonic() > deadline:
                journal = self.guest.sh("journalctl -b -o short-monotonic --no-pager | tail -80", timeout=60).out
                raise GuestError(f"kitchen: no {pattern!r} from the client within {timeout:g} s; it said:\n{log}\n"
                                 f"--- kitchen's journal (end)\n{journal}")
            time.sleep(1)

    def set_up(self, mode: str, power_off: bool = False) -> None:
        """Reconfigure the client (as its owner would) and start it afresh, from a torn-down board."""
        toml = "[client]\n" + (f'mount_mode = "{mode}"\n' if mode != "autofs" else "")
        toml += "power_off = true\n" if power_off else ""
        self.guest.sh(f"""set -e
systemctl stop pistop-mdns-client
systemctl stop mpd.service mpd.socket autofs.service
if grep -q ' {MOUNTPOINT} ' /proc/self/mountinfo; then umount -i -f -l {MOUNTPOINT}; fi
cp /etc/mpd.conf.house /etc/mpd.conf
printf '%s' '{toml}' > {CONFIG}
systemctl start pistop-mdns-client
""", timeout=240)

    def play(self) -> tuple[Elapsed, Elapsed]:
        """Queue the song, play it, and read mpd's status twice, 3 s apart."""
        out = self.guest.sh(f"""set -e
mpc -q clear
mpc -q add {SONG}
mpc -q repeat on
mpc -q play
sleep 2
mpc status
echo ---
sleep 3
mpc status
""", timeout=120).out
        first, second = out.split("---")
        return parse_status(first), parse_status(second)

    def assert_plays(self) -> None:
        first, second = self.play()
        assert first.playing and second.playing, f"kitchen's mpd does not play: {first}, {second}"
        assert second.seconds > first.seconds, f"elapsed time does not advance: {first} then {second}"

    def mounted(self) -> str:
        """The share's line in mountinfo ("" when nothing is mounted there)."""
        out = self.guest.sh(f"grep ' {MOUNTPOINT} ' /proc/self/mountinfo || true", timeout=60).out
        return out.strip()

    def state(self, unit: str) -> str:
        return self.guest.sh(f"systemctl is-active {unit} || true", timeout=60).out.strip()


# ---------------------------------------------------------------- building the house


@dataclass
class House:
    bed: Testbed
    server: Guest
    board: Board
    deb: str  # the .deb as the guests see it
    installed: dict[str, str] = field(default_factory=dict)  # guest name -> what apt said


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C does (pytest then runs every finalizer and
    stops), so that the clean-up runs."""
    def stop(signum, frame):
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def both(server: Guest, board: Guest, server_script: str, board_script: str, timeout: float) -> tuple[str, str]:
    """Run a script in each guest at the same time: their outputs; fail with the output of any that failed."""
    numbers = server.submit(server_script, timeout), board.submit(board_script, timeout)
    outputs = []
    for guest, number, script in zip((server, board), numbers, (server_script, board_script)):
        answer = guest.answer(number, timeout + 60)
        if answer is None:
            raise GuestError(f"{guest.name}: no answer after {timeout + 60:g} s to:\n{script}\n{guest.tail()}")
        rc, out = answer
        if rc != 0:
            raise GuestError(f"{guest.name}: exit {rc} from:\n{script}\n--- output\n{out[-6000:]}")
        outputs.append(out)
    return outputs[0], outputs[1]


def make_song(path: Path) -> None:
    subprocess.run(["timeout", "120", "sox", "-n", "-r", "44100", "-c", "1", "--comment", "TITLE=Kitchen Tone",
                    "--add-comment", "ARTIST=Test Bed", str(path), "synth", str(SONG_SECONDS), "sine", "440"],
                   check=True, capture_output=True)


@contextlib.contextmanager
def music_house(say=print) -> Iterator[House]:
    """The house, installed and running: the server serving, the board's client started."""
    need_root()
    need("qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4", "sox", "ip", "dpkg-buildpackage",
         package="qemu-system-x86 qemu-utils debootstrap e2fsprogs sox iproute2 dpkg-dev")
    if not os.path.exists("/dev/net/tun"):
        pytest.fail("/dev/net/tun is missing: the guests' network is tap devices (modprobe tun)")
    started = time.monotonic()
    image = guest_image(debian_mirror())
    work = Path(tempfile.mkdtemp(prefix="pistop-mdns-system-"))
    try:
        deb, _ = build_deb(work, nocheck=True)  # the packaging tests run the unit tests in the build
        make_song(work / "tone.flac")
        say(f"image and .deb ready after {time.monotonic() - started:.0f} s")
        with _sigterm_raises(), Testbed(image) as bed:
            server = bed.add("musicpi", SERVER_ADDRESS)
            board = bed.add("kitchen", BOARD_ADDRESS)
            for guest in (server, board):
                shutil.copyfile(deb, guest.share / deb.name)
                shutil.copyfile(work / "tone.flac", guest.share / "tone.flac")
            bed.boot_all()
            say(f"guests up after {time.monotonic() - started:.0f} s")
            house = House(bed, server, Board(board), f"/mnt/share/{deb.name}")
            both(server, board, SERVER_SETUP, BOARD_SETUP, timeout=300)
            install = INSTALL.format(deb=house.deb)
            house.installed = dict(zip(("musicpi", "kitchen"), both(server, board, install, install, timeout=600)))
            both(server, board, "pistop-mdns install-service server", "pistop-mdns install-service client",
                 timeout=300)
            say(f"house set up after {time.monotonic() - started:.0f} s")
            yield house
    finally:
        remove_tree(work)
