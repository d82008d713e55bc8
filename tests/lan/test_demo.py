"""The README's first command: `pistop-mdns demo` builds its own LAN, narrates, cleans up."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import ENV, need_root, pm_argv

pytestmark = pytest.mark.lan


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_demo_narrates_the_whole_chain_and_leaves_nothing_behind():
    need_root()
    proc = subprocess.Popen(pm_argv("demo"), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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


def test_demo_without_root_says_so():
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *pm_argv("demo")],
                          env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "pistop-mdns demo needs root: it builds network namespaces. Run: sudo pistop-mdns demo" in proc.stdout


def test_demo_keep_waits_for_ctrl_c_and_then_cleans_up():
    need_root()
    import signal
    import time

    proc = subprocess.Popen(pm_argv("demo", "--keep"), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "this checkout's pistop-mdns:" in line:
                break
        lines.append(proc.stdout.readline())
        assert any("sudo nsenter -t" in line and "# kitchen (198.18.0.12)" in line for line in lines), lines
        assert "-m pistop_mdns browse" in lines[-1]
        time.sleep(1)
        assert proc.poll() is None, "the LAN should stay up until Ctrl-C"
        assert [ns for ns in namespaces() if ns.startswith(f"pm{proc.pid}x")]
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "done: nothing is left behind" in rest
    assert not [ns for ns in namespaces() if ns.startswith(f"pm{proc.pid}x")]
