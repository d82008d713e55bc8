"""`pistop-mdns install-service` with the real tools: svscan/supervise/svstat, systemctl --root, setpriv.

Everything is written under a temporary --root. The daemontools client is
started by a real svscan inside a LAN host, because the client browses mDNS
and must never do so in the machine's own network namespace. The service
runs this checkout through a `pistop-mdns` wrapper put first on PATH, which
is what install-service finds and writes into the run script.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ENV, PYTHON, REPO, need, need_root, pm_argv, wait_for

pytestmark = pytest.mark.components


@pytest.fixture
def on_path(tmp_path):
    """An environment whose PATH starts with a `pistop-mdns` that runs this checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "pistop-mdns"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {PYTHON} -m pistop_mdns "$@"\n')
    wrapper.chmod(0o755)
    return {**ENV, "PATH": f"{bin_dir}:{ENV.get('PATH', '/usr/bin:/bin')}"}, wrapper


def install(env, *args: str, pre: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(pm_argv(*pre, "install-service", *args), capture_output=True, text=True, env=env,
                          timeout=60)


@pytest.fixture
def client_config(tmp_path):
    """A client that follows nothing here and touches nothing outside tmp_path."""
    (tmp_path / "mnt").mkdir()
    path = tmp_path / "pistop-mdns.toml"
    path.write_text(
        "[general]\n"
        f'state_dir = "{tmp_path}/state"\n'
        'service_manager = "none"\n'
        "[client]\n"
        'mount_mode = "direct"\n'
        f'mountpoint = "{tmp_path}/mnt"\n'
        f'mpd_conf = "{tmp_path}/mpd.conf"\n'
        "startup_wait = 0\n")
    return path


def svstat(directory: Path, host) -> str:
    return host.run(["svstat", str(directory)], timeout=10).stdout.strip()


def test_daemontools_client_starts_under_svscan_and_remove_stops_and_removes_it(
        make_lan, on_path, client_config, tmp_path):
    need_root()
    need("svscan", "supervise", "svstat", "svc", "svok", "multilog", package="daemontools")
    env, wrapper = on_path
    root = tmp_path / "root"
    proc = install(env, "client", "--init", "daemontools", "--root", str(root), pre=("--config", str(client_config)))
    assert proc.returncode == 0, proc.stderr
    service = root / "service" / "pistop-mdns-client"
    run = (service / "run").read_text()
    assert run.endswith(f"exec 2>&1\nexec {wrapper} --config {client_config} --envdir ./variables client\n")
    assert (service / "log" / "run").read_text().endswith("exec multilog t ./main\n")
    assert (service / "variables").is_dir()

    host = make_lan(["kitchen"])["kitchen"]
    host.spawn(["svscan", str(root / "service")])
    status = wait_for(lambda: (s := svstat(service, host)).startswith(f"{service}: up") and s, 20,
                      interval=0.2, what="svstat to show the client up")
    pid = int(status.split("(pid ")[1].split(")")[0])
    # It is really the client, running and browsing, not a crash loop.
    state_file = tmp_path / "state" / "client.json"
    wait_for(state_file.exists, 20, interval=0.2, what="the client's state file")
    assert json.loads(state_file.read_text())["pid"] in (pid, *child_pids(pid))
    log = service / "log" / "main" / "current"
    wait_for(lambda: log.exists() and log.read_text().strip(), 20, interval=0.2, what="multilog's log")

    again = install(env, "client", "--init", "daemontools", "--root", str(root), pre=("--config", str(client_config)))
    assert again.returncode == 0 and "already installed and up to date" in again.stderr
    assert f"(pid {pid})" in svstat(service, host)  # not restarted

    removed = install(env, "client", "--init", "daemontools", "--root", str(root), "--remove")
    assert removed.returncode == 0, removed.stderr
    assert os.listdir(root / "service") == []
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 20, interval=0.2, what="the client to exit")


def child_pids(pid: int) -> list[int]:
    """The wrapper execs python, so the pid usually is the client's; a shell may sit in between."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_remove_of_a_service_nothing_supervises_just_removes_it(on_path, tmp_path):
    need_root()
    need("svc", "svok", package="daemontools")
    env, _ = on_path
    root = tmp_path / "root"
    assert install(env, "update", "--init", "daemontools", "--root", str(root)).returncode == 0
    run = (root / "service" / "pistop-mdns-update" / "run").read_text()
    assert "sleep 300\n" in run and "--envdir ./variables update\nexec sleep 21300\n" in run
    proc = install(env, "update", "--init", "daemontools", "--root", str(root), "--remove")
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(root / "service") == []


def test_systemd_units_are_written_and_enabled_in_another_root(on_path, tmp_path):
    need_root()
    need("systemctl", package="systemd")
    env, wrapper = on_path
    root = tmp_path / "root"
    proc = install(env, "update", "--init", "systemd", "--root", str(root), "--interval", "3600")
    assert proc.returncode == 0, proc.stderr
    units = root / "etc/systemd/system"
    assert f"ExecStart={wrapper} update" in (units / "pistop-mdns-update.service").read_text()
    assert (units / "pistop-mdns-update.timer.d/interval.conf").read_text().endswith("OnUnitActiveSec=3600s\n")
    link = units / "timers.target.wants/pistop-mdns-update.timer"
    assert os.readlink(link) == "/etc/systemd/system/pistop-mdns-update.timer"  # real systemctl --root did it
    proc = install(env, "update", "--init", "systemd", "--root", str(root), "--remove")
    assert proc.returncode == 0, proc.stderr
    assert not os.path.lexists(link) and not (units / "pistop-mdns-update.timer").exists()
    assert not (units / "pistop-mdns-update.timer.d").exists()


def test_rsync_role_writes_its_configuration_from_mpd_conf_once(on_path, tmp_path):
    need_root()
    need("systemctl", package="systemd")
    env, _ = on_path
    root = tmp_path / "root"
    mpd_conf = tmp_path / "mpd.conf"
    mpd_conf.write_text('music_directory "/srv/disk/Music"\n')
    proc = install(env, "rsync", "--init", "systemd", "--root", str(root), "--mpd-conf", str(mpd_conf))
    assert proc.returncode == 0, proc.stderr
    conf = root / "etc/pistop-mdns/rsyncd.conf"
    assert "\tpath = /srv/disk/Music\n" in conf.read_text()
    assert "set advertise_rsync = true in [server]" in proc.stderr
    assert (root / "etc/systemd/system/multi-user.target.wants/pistop-mdns-rsync.service").is_symlink()
    mpd_conf.write_text('music_directory "/elsewhere"\n')
    assert install(env, "rsync", "--init", "systemd", "--root", str(root), "--mpd-conf", str(mpd_conf)).returncode == 0
    assert "\tpath = /srv/disk/Music\n" in conf.read_text()  # the user's file from now on


def test_it_refuses_to_run_without_root(on_path, tmp_path):
    need("setpriv", package="util-linux")
    env, _ = on_path
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                           *pm_argv("install-service", "client", "--init", "daemontools", "--root", str(tmp_path))],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert "install-service needs root" in proc.stderr and "sudo" in proc.stderr
    assert os.listdir(tmp_path) == ["bin"]
