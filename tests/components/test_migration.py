"""Moving from pistop with real daemontools: `install-service ROLE --from-pistop` replaces a running
fserver (whose tcpserver, from ucspi-tcp, holds port 5555) or fclient in a temporary service directory.

svscan, supervise, svc, svstat and tcpserver are the real programs. Everything runs in one host of the
simulated LAN (its own network namespace: tcpserver's port and the new server's mDNS stay there), and the
services run this checkout through a `pistop-mdns` wrapper first on PATH, which install-service writes
into the run script.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import ENV, PYTHON, REPO, need, need_root, pm_argv, wait_for

pytestmark = pytest.mark.components

HELLO = ("import socket, sys\n"
         "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
         "print(s.makefile().readline().strip())\n")


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def old_service(service_dir: Path, name: str, run: str, variables: dict[str, str]) -> Path:
    """A pistop service as create_service left it: run, log/run (multilog), variables/."""
    d = service_dir / name
    write(d / "run", f"#!/bin/sh\nexec 2>&1\n{run}\n", 0o755)
    write(d / "log" / "run", "#!/bin/sh\nexec multilog t ./main\n", 0o755)
    for var, value in variables.items():
        write(d / "variables" / var, value + "\n" if value else "")
    write(d / "variables" / ".options", f"/usr/libexec/pistop/create_service --service_name={name} --add-service\n")
    return d


@pytest.fixture
def house(make_lan, tmp_path):
    """musicpi (a LAN host) with svscan watching ROOT/service, and how to run install-service there."""
    need_root()
    need("svscan", "supervise", "svc", "svstat", "svok", "multilog", package="daemontools")
    need("tcpserver", package="ucspi-tcp")
    host = make_lan(["musicpi"])["musicpi"]
    root = tmp_path / "root"
    service_dir = root / "service"
    service_dir.mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    write(bin_dir / "pistop-mdns", f'#!/bin/sh\nPYTHONPATH={REPO} exec {PYTHON} -m pistop_mdns "$@"\n', 0o755)
    env = {**ENV, "PATH": f"{bin_dir}:{ENV['PATH']}"}

    def install(*args: str, config: Path) -> subprocess.CompletedProcess:
        return host.run(pm_argv("--config", str(config), "install-service", *args, "--init", "daemontools",
                                "--root", str(root)), env=env, timeout=120)

    def svstat(d: Path) -> str:
        return subprocess.run(["svstat", str(d)], capture_output=True, text=True, timeout=10).stdout.strip()

    def hello(port: int = 5555) -> str:
        return host.run([PYTHON, "-c", HELLO, str(port)], timeout=20).stdout.strip()

    def start_svscan() -> None:
        host.spawn(["svscan", str(service_dir)], stdout=subprocess.DEVNULL)

    return host, service_dir, install, svstat, hello, start_svscan


def server_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "server.toml"
    write(path, f'[general]\nstate_dir = "{tmp_path}/state"\nservice_manager = "none"\n{extra}'
                '[server]\nexport = "/srv/music"\nmpd_port = 6600\n')
    return path


def fserver(tmp_path: Path, service_dir: Path) -> Path:
    src = tmp_path / "etc-music"
    write(src / "mpd.conf", 'music_directory "/MDrive/Music"\n')
    disk = tmp_path / "MDrive"
    (disk / "backup").mkdir(parents=True)
    return old_service(service_dir, "fserver", "exec tcpserver -v -RHl0 0 5555 echo pistopserver", {
        "HOST": "0", "PORT": "5555", "MAXDAEMONS": "10", "USER": "pi", "UID": "1000", "GID": "1000",
        "MDRIVE": str(disk), "BACKUP": str(src), "DEST": str(disk), "LCD_FIFO": "", "NOTIFY_HOST": ""})


def test_without_the_flag_a_running_fserver_on_the_port_is_a_clear_error(house, tmp_path):
    host, service_dir, install, svstat, hello, start_svscan = house
    old = fserver(tmp_path, service_dir)
    start_svscan()
    wait_for(lambda: hello() == "pistopserver", 20, interval=0.2, what="fserver's tcpserver on 5555")
    proc = install("server", config=server_config(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert f"port 5555 is held by pistop's fserver ({old}: tcpserver (pid " in proc.stderr
    assert "fix: move over with `pistop-mdns install-service server --from-pistop`" in proc.stderr
    assert sorted(os.listdir(service_dir)) == ["fserver"]
    # Anything else on the port is named too.
    proc = install("server", "--port", "5556", config=server_config(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "pistop's fserver still runs in" in proc.stderr  # beside it, for the boards not moved yet
    assert "--port 5556" in (service_dir / "pistop-mdns-server" / "run").read_text()


def test_from_pistop_replaces_fserver_only_once_the_new_server_runs(house, tmp_path):
    host, service_dir, install, svstat, hello, start_svscan = house
    old = fserver(tmp_path, service_dir)
    start_svscan()
    wait_for(lambda: hello() == "pistopserver", 20, interval=0.2, what="fserver's tcpserver on 5555")
    started = time.monotonic()
    proc = install("server", "--from-pistop", config=server_config(tmp_path))
    print(f"\n{proc.stderr}{proc.stdout}took {time.monotonic() - started:.1f} s")
    assert proc.returncode == 0, proc.stderr
    new = service_dir / "pistop-mdns-server"
    out = proc.stdout
    assert f"moved server from pistop's {old}:" in out
    assert f"carried over BACKUP, DEST, MDRIVE to {new}/variables/" in out
    assert "stopped pistop's fserver first: it held port 5555" in out
    assert f"{new} runs: up (pid " in out
    assert f"stopped pistop's fserver and its log (svc -dx) and removed {old}" in out
    for var in ("GID", "HOST", "MAXDAEMONS", "PORT", "UID", "USER"):
        assert f"not used any more: {var}: " in out
    assert sorted(os.listdir(service_dir)) == ["pistop-mdns-server"]
    assert sorted(os.listdir(new / "variables")) == ["BACKUP", "DEST", "MDRIVE"]
    assert not (new / "down").exists()
    assert svstat(new).startswith(f"{new}: up (pid ")
    assert json.loads(hello())["t"] == "hello"  # port 5555 is the new server's liveness channel now
    # fserver's habit kept: the backup at start, from the carried-over BACKUP and DEST.
    copy = tmp_path / "MDrive" / "backup" / "musicpi" / str(tmp_path / "etc-music").lstrip("/") / "mpd.conf"
    wait_for(copy.exists, 30, interval=0.2, what="the new server's backup at start")


def test_a_new_server_that_does_not_stay_up_brings_fserver_back_and_removes_nothing(house, tmp_path):
    host, service_dir, install, svstat, hello, start_svscan = house
    old = fserver(tmp_path, service_dir)
    start_svscan()
    wait_for(lambda: hello() == "pistopserver", 20, interval=0.2, what="fserver's tcpserver on 5555")
    bad_key = tmp_path / "key"
    write(bad_key, "too short\n", 0o600)  # the server refuses to start with it
    proc = install("server", "--from-pistop", str(old),
                   config=server_config(tmp_path, f'key_file = "{bad_key}"\n'))
    assert proc.returncode == 1, proc.stderr
    new = service_dir / "pistop-mdns-server"
    assert "the new server did not stay up" in proc.stderr
    assert "it is stopped again (./down) and pistop's fserver runs again" in proc.stderr
    assert f"fix: see {new}/log/main/current" in proc.stderr
    assert (old / "run").exists() and (new / "down").exists()
    wait_for(lambda: hello() == "pistopserver", 20, interval=0.2, what="fserver back on 5555")
    assert svstat(new).startswith(f"{new}: down "), svstat(new)


def test_without_the_flag_a_running_fclient_is_refused_and_with_it_replaced(house, tmp_path):
    host, service_dir, install, svstat, hello, start_svscan = house
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    old = old_service(service_dir, "fclient", "exec sleep 600", {
        "HOST": "192.168.1.101", "PORT": "5555", "MDRIVE": str(mnt), "POWER_OFF": "1", "FORCE_UMOUNT": "1",
        "TIMEOUT": "60", "USER": "root", "HOME": "/root", "PATH": "/bin:/usr/bin", "MAXDAEMONS": "10",
        "LCD_HOST": "", "LCD_PORT": ""})
    start_svscan()
    wait_for(lambda: svstat(old).startswith(f"{old}: up "), 20, interval=0.2, what="fclient up")
    config = tmp_path / "client.toml"
    write(config, f'[general]\nstate_dir = "{tmp_path}/state"\nservice_manager = "none"\n'
                  f'[client]\nmount_mode = "direct"\nmpd_conf = "{tmp_path}/mpd.conf"\nstartup_wait = 0\n')
    proc = install("client", config=config)
    assert proc.returncode == 2
    assert f"pistop's fclient runs in {old}: both would mount the share and start and stop mpd" in proc.stderr
    proc = install("client", "--from-pistop", config=config)
    assert proc.returncode == 0, proc.stderr
    new = service_dir / "pistop-mdns-client"
    assert f"carried over FORCE_UMOUNT, HOST, MDRIVE, PORT, POWER_OFF, TIMEOUT to {new}/variables/" in proc.stdout
    assert "stopped pistop's fclient first" not in proc.stdout  # nothing to share: the new one starts first
    assert sorted(os.listdir(service_dir)) == ["pistop-mdns-client"]
    assert svstat(new).startswith(f"{new}: up ")
    state = tmp_path / "state" / "client.json"
    wait_for(state.exists, 20, interval=0.2, what="the new client's state file")
