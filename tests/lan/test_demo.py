"""The README's first command: `pistop-mdns demo` builds its own LAN, tells the story with the
real chain, and leaves nothing behind. Its claims are checked from the outside: with --keep, the
test runs the very commands the demo prints (mpc in the boards, the mpd.conf files, status,
browse), then lets it finish and looks for anything it left."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pistop_mdns import lan_music
from pistop_mdns.actions import demo
from tests.helpers import ENV, Output, need_root, pm_argv, wait_for

pytestmark = pytest.mark.lan

SONGS = ["ArtistA/one.flac", "ArtistA/two.ogg", "ArtistB/three.flac"]


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def processes_in(namespace_ids: set[str], root: Path) -> list[str]:
    """Processes in those network namespaces, or with `root` on their command line."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            netns = os.readlink(f"/proc/{pid}/ns/net")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if netns in namespace_ids or str(root) in cmdline:
            found.append(f"{pid} {cmdline.replace(chr(0), ' ')}")
    return found


@contextlib.contextmanager
def running_demo(*args: str):
    """`pistop-mdns demo ARGS`, its output collected as it comes; killed if the test ends early."""
    proc = subprocess.Popen(pm_argv("demo", *args), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        yield Output(proc, "pistop-mdns demo")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def end_keep(demo_out: Output, last: str) -> int:
    """The LAN is still up: Ctrl-C, then the demo goes on until `last` and exits; its status."""
    time.sleep(1)
    assert demo_out.proc.poll() is None, "--keep keeps the LAN up until Ctrl-C"
    demo_out.proc.send_signal(signal.SIGINT)
    demo_out.wait(last, 180)
    return demo_out.proc.wait(30)


def run_hint(command: str) -> subprocess.CompletedProcess:
    """One of the demo's `sudo ...` lines, as root."""
    return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)


def elapsed(status: str) -> int | None:
    match = re.search(r"\[playing\] #\d+/\d+\s+(\d+):(\d+)/", status)
    return int(match[1]) * 60 + int(match[2]) if match else None


def test_full_demo_plays_music_in_the_rooms_and_leaves_nothing_behind():
    need_root()
    missing = lan_music.missing_packages()
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install {' '.join(missing)} (tools/test installs them)")
    with running_demo("--keep") as demo_out:
        demo_out.wait(r"# a shell in kitchen", 300)
        story = demo_out.text()
        hints = {why.strip(): command for command, why in
                 re.findall(r"^    sudo (.*?)    # (.*)$", story, re.MULTILINE)}
        assert "what plays in kitchen" in hints, story
        prefix = f"pm{demo_out.proc.pid}x"
        ours = {ns for ns in namespaces() if ns.startswith(prefix)}
        assert len(ours) == 4, ours  # the bridge and three hosts
        namespace_ids = {f"net:[{os.stat(f'/run/netns/{ns}').st_ino}]" for ns in ours}
        kitchen_conf = Path(hints["as pistop-mdns rewrote it (mpd.conf.bak: before)"].removeprefix("cat "))
        root = kitchen_conf.parent.parent

        # the rooms play musicpi's songs through their own mpd
        playing = run_hint(hints["what plays in kitchen"])
        assert playing.returncode == 0 and "Artist A - Tone One" in playing.stdout, playing
        first = elapsed(playing.stdout)
        assert first is not None, playing.stdout
        wait_for(lambda: (elapsed(run_hint(hints["what plays in kitchen"]).stdout) or 0) > first, 30,
                 interval=0.5, what="kitchen's song to move on")
        listed = run_hint(hints["musicpi's library, through kitchen's proxy database"])
        assert listed.stdout.split() == SONGS, listed
        bedroom = run_hint(hints["what plays in bedroom"])
        assert "[playing]" in bedroom.stdout and "Artist B - Tone Three" in bedroom.stdout, bedroom
        assert run_hint(hints["musicpi's own mpd"]).stdout.split() == SONGS
        assert {"ArtistA", "ArtistB"} <= set(run_hint(hints["the share, over NFS"]).stdout.split())

        # the mpd.conf files: pistop's, rewritten where the demo says, kept as .bak
        for room in ("kitchen", "bedroom"):
            before = (root / room / "mpd.conf.bak").read_text()
            after = (root / room / "mpd.conf").read_text()
            assert '\thost   "MusicPI"   # set by pistop-mdns\n' in before
            assert 'music_directory\t\t"/var/lib/mpd/MDrive/Music"\n' in before
            assert after == before.replace('"MusicPI"', '"198.18.0.11"').replace(
                '"/var/lib/mpd/MDrive/Music"', '"nfs://198.18.0.11/srv/music/Music"')

        client = run_hint(hints["what kitchen's client is doing"])
        assert client.returncode == 0 and "client kitchen: up" in client.stdout, client
        browse = run_hint(hints["the music servers bedroom sees"])
        assert re.search(r"^musicpi +musicpi\.local +198\.18\.0\.11 +5555 +up +/srv/music +Music +6600",
                         browse.stdout, re.MULTILINE), browse

        exit_status = end_keep(demo_out, r"demo     read more: ")
    out = demo_out.text()
    assert exit_status == 0, out

    # the story, in its order
    acts = [out.index(f"demo     act {n}: ") for n in (1, 2, 3, 4)]
    assert acts == sorted(acts), out
    for pattern in [
        r"musicpi  198\.18\.0\.11 +music server: 3 songs of 60 s made with sox",
        r"nfs-ganesha \(userspace NFS, with rpcbind\) serves nfs://198\.18\.0\.11/srv/music over NFSv3 and v4",
        r'kitchen  198\.18\.0\.12 +room board: mpd.conf as pistop left it, proxy host "MusicPI" '
        r"\(which nothing here resolves\)",
        r"kitchen  server musicpi \(198\.18\.0\.11\) appeared -> mpd reads nfs://198\.18\.0\.11/srv/music/Music, "
        r"point mpd at 198\.18\.0\.11:6600, start mpd",
        r"kitchen  started mpd: svc -u .*/kitchen/service/mpd: up",
        r'bedroom    -\thost   "MusicPI"',
        r'bedroom    \+\thost   "198\.18\.0\.11"',
        r"kitchen  mpc status: \[playing\] #1/1 +0:0[2-9]/1:00 .*Artist A - Tone One: the song is read over NFS",
        r"kitchen  server musicpi silent for 5 s \(crashed or unplugged\) -> ask mpd to stop",
        r"kitchen  mpc status: MPD error: Connection refused",
        r"bedroom  mpc status: \[playing\] .*Artist B - Tone Three: mpd resumed by itself",
        r"kitchen  server musicpi is powering off -> stop mpd, sync and power off",
        r"kitchen  would power off now",
        r"bedroom  would power off now",
        r"musicpi  all 2 client\(s\) are down: ",
        r"musicpi  powered off: (kitchen, bedroom|bedroom, kitchen)\n",
        r"musicpi  shutdown: stop mpd \(daemontools\): done \(svc -d .*/musicpi/service/mpd: down ",
        r"musicpi  would power off now \(`pistop-mdns shutdown` exited with status 0",
        r"bedroom  would power off now .*`pistop-mdns client` exited with status 0",
        rf"left behind: nothing \(no {prefix}\d+-\* namespace",
    ]:
        assert re.search(pattern, out), f"{pattern!r} not in the demo's output:\n{out}"
    assert out.index("act 2: ") < out.index("silent for 5 s") < out.index("act 3: ")
    # the boards are off before the server goes
    assert out.index("bedroom  would power off now") < out.index("musicpi  powered off: ") < \
        out.index("musicpi  shutdown: sync: done") < out.index("musicpi  would power off now")

    # and nothing is left: namespaces, processes, files
    assert not [ns for ns in namespaces() if ns.startswith(prefix)]
    assert not processes_in(namespace_ids, root)
    assert not root.exists()


def test_dry_run_is_the_quick_version_and_leaves_nothing_behind():
    need_root()
    proc = subprocess.Popen(pm_argv("demo", "--dry-run"), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    for line in [
        "musicpi  198.18.0.11   music server",
        "advertising musicpi._pistop._tcp.local. on 198.18.0.11 port 5555",
        "kitchen  server musicpi (198.18.0.11) appeared -> mount 198.18.0.11:/srv/music",
        "bedroom  server musicpi (198.18.0.11) appeared -> mount 198.18.0.11:/srv/music",
        "kitchen    musicpi   musicpi.local  198.18.0.11  5555  up     /srv/music  Music  6600",
        "server exited with status 0",
        "kitchen  server musicpi is stopping -> stop mpd, unmount /var/lib/mpd/MDrive",
        "bedroom  server musicpi is stopping -> stop mpd, unmount /var/lib/mpd/MDrive",
        "done: nothing is left behind",
    ]:
        assert line in out, f"{line!r} not in the demo's output:\n{out}"
    # its namespaces carry its PID (other runs may have theirs meanwhile)
    assert not [ns for ns in namespaces() if ns.startswith(f"pm{proc.pid}x")]


def test_without_the_music_packages_the_demo_says_so_and_runs_the_quick_version(monkeypatch):
    need_root()
    monkeypatch.setattr(lan_music, "missing_packages", lambda: ["nfs-ganesha", "rpcbind"])
    out = io.StringIO()
    assert demo.run(keep=False, out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == ("the full demo needs nfs-ganesha, rpcbind (sudo apt install nfs-ganesha rpcbind, or run "
                        "tools/demo): showing the quick version, whose boards only plan (--dry-run)")
    assert lines[3].endswith("kitchen  198.18.0.12   room board (client, --dry-run)")
    assert lines[-1].endswith("done: nothing is left behind")


def test_demo_without_root_says_so():
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *pm_argv("demo")],
                          env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "pistop-mdns demo needs root: it builds network namespaces. Run: sudo pistop-mdns demo" in proc.stdout


def test_dry_run_keep_waits_for_ctrl_c_and_then_cleans_up():
    need_root()
    with running_demo("--dry-run", "--keep") as demo_out:
        demo_out.wait(r"-m pistop_mdns browse", 120)
        assert demo_out.find(r"sudo nsenter -t \d+ -n -u -m +# kitchen \(198\.18\.0\.12\)"), demo_out.text()
        prefix = f"pm{demo_out.proc.pid}x"
        assert [ns for ns in namespaces() if ns.startswith(prefix)]
        assert end_keep(demo_out, r"done: nothing is left behind") == 0, demo_out.text()
    assert not [ns for ns in namespaces() if ns.startswith(prefix)]
