"""Real peers on the simulated LAN: our own commands and an independent avahi-daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess

from pistop_mdns import auth
from pistop_mdns.lan import Host
from tests.helpers import ENV, Output, need, pm_argv, wait_for


def start(host: Host, *args: str, name: str | None = None) -> Output:
    """Run `pistop-mdns ARGS` in `host`; its output is collected as it comes."""
    proc = host.spawn(pm_argv(*args), env=ENV)
    return Output(proc, name or f"{host.name}: pistop-mdns {args[0]}")


def server(host: Host, tmp_path, *extra: str) -> Output:
    state = tmp_path / f"state-{host.name}"
    return start(host, "server", "--export", "/srv/music", "--music", "Music", "--mpd-port", "6600",
                 "--state-dir", str(state), *extra)


def client(host: Host, tmp_path, *extra: str) -> Output:
    """A dry-run board with its own mpd.conf (a proxy block, as a configured board has), so
    that what this machine's /etc/mpd.conf holds never changes what the board says."""
    state = tmp_path / f"state-{host.name}"
    if "--mpd-conf" not in extra:
        conf = tmp_path / f"mpd-{host.name}.conf"
        if not conf.exists():
            conf.write_text('database {\n    plugin "proxy"\n    host "MusicPI"\n    port "6600"\n}\n')
        extra = ("--mpd-conf", str(conf), *extra)
    return start(host, "client", "--dry-run", "--mount-mode", "direct", "--mountpoint", "/mnt/music",
                 "--state-dir", str(state), *extra)


def stop(out: Output, timeout: float = 15) -> int:
    os.kill(out.proc.pid, signal.SIGTERM)
    return out.proc.wait(timeout)


def browse_json(host: Host, timeout: float = 3.0, *extra: str) -> tuple[int, list[dict]]:
    proc = host.run(pm_argv("browse", "--json", "--timeout", str(timeout), *extra), env=ENV, timeout=timeout + 20)
    return proc.returncode, json.loads(proc.stdout or "[]")


def browse_until(host: Host, instance: str, timeout: float = 20) -> dict:
    """Browse repeatedly until `instance` shows up (a server needs a moment to register)."""
    def look():
        _, found = browse_json(host, 2.0)
        return next((f for f in found if f["instance"] == instance), None)
    return wait_for(look, timeout, interval=0, what=f"browse to see {instance}")


def start_avahi(host: Host, tmp_path) -> subprocess.Popen:
    need("avahi-daemon", "avahi-browse", "avahi-publish", "dbus-daemon",
         package="avahi-daemon avahi-utils dbus")
    return host.start_avahi(str(tmp_path))


def make_key(tmp_path) -> str:
    """A shared key file, as `pistop-mdns keygen` writes it."""
    path = tmp_path / "key"
    path.write_text(auth.generate_key() + "\n")
    path.chmod(0o600)
    return str(path)
