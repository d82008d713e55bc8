"""Moving from pistop, the pure parts: which variables are carried over, which are no longer used
and why, who holds a port (from /proc's text), and the server's --port in the service's command."""

from __future__ import annotations

import os

from pistop_mdns import config, pistop
from pistop_mdns.actions import install_service as svc

# /proc/net/tcp: a listener on 0.0.0.0:5555 (0x15B3, inode 4242), a connection from port 5555, a
# listener on 127.0.0.1:6600.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:15B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0
   1: 0B1212C6:15B3 0C1212C6:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0
   2: 0100007F:19C8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0
"""


def test_listening_sockets_are_read_from_proc_net_tcp():
    assert svc.listening_inodes(PROC_NET_TCP, 5555) == {4242}
    assert svc.listening_inodes(PROC_NET_TCP, 6600) == {4444}
    assert svc.listening_inodes(PROC_NET_TCP, 873) == set()
    assert svc.listening_inodes("header only\n   0: garbage\n", 5555) == set()


def fake_proc(tmp_path, processes):
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "net" / "tcp").write_text(PROC_NET_TCP)
    for pid, parent, comm, cmdline, sockets in processes:
        d = proc / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "comm").write_text(comm + "\n")
        (d / "cmdline").write_bytes(b"\0".join(w.encode() for w in cmdline) + b"\0")
        (d / "stat").write_text(f"{pid} ({comm}) S {parent} {pid} {pid} 0 -1\n")
        for n, inode in enumerate(sockets):
            os.symlink(f"socket:[{inode}]", d / "fd" / str(n))
    return str(proc)


def test_the_port_holder_is_named_and_traced_to_the_old_service(tmp_path):
    proc = fake_proc(tmp_path, [
        (700, 1, "supervise", ["supervise", "fserver"], []),
        (701, 700, "tcpserver", ["tcpserver", "-v", "0", "5555", "pistopserver"], [4242]),
        (702, 701, "pistopserver", ["pistopserver"], []),
    ])
    holder = svc.port_holder(5555, proc)
    assert holder == svc.Holder(701, "tcpserver", "tcpserver -v 0 5555 pistopserver")
    assert str(holder) == "tcpserver (pid 701: tcpserver -v 0 5555 pistopserver)" and not holder.ours
    assert svc.port_holder(873, proc) is None
    assert svc.port_holder(6600, proc) == svc.Holder(None)  # held by a process this user cannot see
    assert svc.descends_from(702, 701, proc) and svc.descends_from(701, 701, proc)
    assert not svc.descends_from(700, 701, proc)


def test_our_own_running_server_is_not_in_the_way():
    assert svc.Holder(9, "python3", "/usr/bin/python3 /usr/bin/pistop-mdns --envdir ./variables server").ours
    assert not svc.Holder(9, "python3", "python3 -m http.server 5555").ours


def test_variables_are_sorted_into_used_no_longer_used_and_unknown():
    variables = {"MDRIVE": b"/MDrive\n", "POWER_OFF": b"1\n", "HOST": b"192.168.1.101\n", "PORT": b"5555\n",
                 "LCD_FIFO": b"", "MINE": b"x\n", "MAXDAEMONS": b"10\n"}
    # on a board HOST and PORT name the server: static_servers; elsewhere they were tcpserver's
    assert pistop.sort_variables(variables) == (["HOST", "MDRIVE", "PORT", "POWER_OFF"], ["MAXDAEMONS"], ["MINE"])
    assert pistop.sort_variables(variables, "server") == (["MDRIVE", "POWER_OFF"], ["HOST", "MAXDAEMONS", "PORT"],
                                                          ["MINE"])


def test_every_variable_create_service_wrote_is_either_read_or_explained():
    written = {"HOST", "PORT", "LCD_HOST", "LCD_PORT", "LCD_FIFO", "NOTIFY_HOST", "NOTIFY_PORT", "NOTIFY_FIFO",
               "TIMEOUT", "MAXDAEMONS", "USER", "HOME", "PATH", "MDRIVE", "DEST", "FORCE_UMOUNT", "POWER_OFF",
               "UID", "GID", "LOCALIP", "MAXPERIP", "SOFT_MEM", "UPGRADE", "INTERVAL", "DEBIAN_FRONTEND", "LOGNAME",
               "BACKUP", "RSYNC_OPTIONS"}
    assert written <= set(config.BY_ENVVAR) | set(pistop.UNUSED) | set(pistop.SERVER_ADDRESS)
    assert not set(config.BY_ENVVAR) & set(pistop.UNUSED)
    assert set(pistop.UNUSED_OFF_BOARD) == set(pistop.SERVER_ADDRESS)


def test_the_upgrade_list_keeps_the_successor_upgraded():
    text = b"ucspi-tcp mpdev daemontools pistop mpd\n"
    assert pistop.carried_over("UPGRADE", text) == (b"ucspi-tcp mpdev daemontools pistop-mdns mpd\n",
                                                    "UPGRADE: pistop replaced by pistop-mdns")
    assert pistop.carried_over("UPGRADE", b"mpd pistop-mdns\n") == (b"mpd pistop-mdns\n", None)
    assert pistop.carried_over("MDRIVE", b"/MDrive\n") == (b"/MDrive\n", None)


def test_default_old_services():
    assert [pistop.default_dir(r) for r in ("server", "client", "update", "rsync")] == [
        "/service/fserver", "/service/fclient", "/service/update", "/service/rsync.875"]


def test_the_servers_port_reaches_its_command_line():
    [unit] = svc.systemd_files("server", ["/usr/bin/pistop-mdns"], role_args=["--port", "5556"])
    assert "\nExecStart=/usr/bin/pistop-mdns server --port 5556\n" in unit.text
    run = {f.path: f for f in svc.daemontools_files("server", "/service", ["/usr/bin/pistop-mdns"],
                                                    role_args=["--port", "5556"])}["/service/pistop-mdns-server/run"]
    assert run.text.endswith("exec /usr/bin/pistop-mdns --envdir ./variables server --port 5556\n")


def pm(*args: str):
    import subprocess
    import sys

    from tests.helpers import ENV

    return subprocess.run([sys.executable, "-m", "pistop_mdns", *args], env=ENV, capture_output=True, text=True,
                          timeout=60)


def test_port_is_for_the_server_only_and_from_pistop_needs_an_old_service(tmp_path):
    proc = pm("install-service", "client", "--port", "5556", "--dry-run", "--init", "daemontools")
    assert proc.returncode == 2 and "--port is the server's liveness channel port" in proc.stderr
    proc = pm("install-service", "client", "--from-pistop", str(tmp_path / "nothing"), "--dry-run",
              "--init", "daemontools")
    assert proc.returncode == 2
    assert f"{tmp_path}/nothing: no pistop service there (no run file, no variables/); fix: give --from-pistop " \
           "the old service's directory, e.g. /service/fclient" in proc.stderr
    proc = pm("install-service", "client", "--from-pistop", "--remove", "--dry-run", "--init", "daemontools")
    assert proc.returncode == 2 and "--remove and --from-pistop: fix: give one of them" in proc.stderr


def test_dry_run_of_a_move_says_what_would_be_carried_over_and_done(tmp_path):
    old = tmp_path / "root" / "service" / "fclient"
    (old / "variables").mkdir(parents=True)
    (old / "run").write_text("#!/bin/sh\n")
    for var, value in {"MDRIVE": "/var/lib/mpd/MDrive", "POWER_OFF": "1", "HOST": "MusicPI"}.items():
        (old / "variables" / var).write_text(value + "\n")
    conf = tmp_path / "c.toml"
    conf.write_text('[client]\nmount_mode = "direct"\n')
    proc = pm("--config", str(conf), "install-service", "client", "--from-pistop", "--dry-run", "--init",
              "daemontools", "--root", str(tmp_path / "root"))
    assert proc.returncode == 0, proc.stderr
    new = tmp_path / "root" / "service" / "pistop-mdns-client"
    assert f"would copy HOST, MDRIVE, POWER_OFF from {old}/variables to {new}/variables/" in proc.stdout
    assert f"would start {new} and wait until it runs for 2 seconds" in proc.stdout
    assert f"then stop and remove pistop's {old} (svc -dx, then the directory)" in proc.stdout
    assert sorted(os.listdir(tmp_path / "root" / "service")) == ["fclient"]


def test_under_systemd_the_variables_go_to_an_envdir_the_unit_reads_and_the_old_service_goes_last(
        tmp_path, monkeypatch):
    from tests.unit.test_install_service import RecordingRunner

    monkeypatch.setattr(svc.time, "sleep", lambda seconds: None)
    old = tmp_path / "service" / "fclient"
    (old / "variables").mkdir(parents=True)
    (old / "run").write_text("#!/bin/sh\n")
    (old / "variables" / "POWER_OFF").write_text("1\n")
    runner = RecordingRunner()
    shown: list[str] = []
    inst = svc.Installer(runner, root=str(tmp_path), echo=shown.append)
    cfg = config.load("/dev/null", str(old), {("general", "hostname"): "kitchen"})
    envdir = os.path.join(svc.PISTOP_COPY_DIR, "fclient")
    wanted = svc.systemd_files("client", ["/usr/bin/pistop-mdns", "--envdir", envdir])
    assert svc.Migration(inst, cfg, "client", str(old), False, shown.append).run(wanted) == 0
    unit = "pistop-mdns-client.service"
    assert runner.calls == [("systemctl", "daemon-reload"), ("systemctl", "enable", unit),
                            ("svok", str(old)), ("systemctl", "start", unit),
                            ("systemctl", "is-active", "--quiet", unit),
                            # unsupervised: nothing to svc -dx; checked again before the directory goes
                            ("svok", str(tmp_path / "service" / ".fclient")),
                            ("svok", str(tmp_path / "service" / ".fclient"))]
    assert (tmp_path / envdir.lstrip("/") / "POWER_OFF").read_text() == "1\n"
    assert f"ExecStart=/usr/bin/pistop-mdns --envdir {envdir} client" in (
        tmp_path / "etc/systemd/system" / unit).read_text()
    assert not old.exists() and shown[0] == f"moved client from pistop's {old}:"


def test_under_systemd_a_unit_that_does_not_stay_active_is_disabled_and_the_old_service_kept(tmp_path, monkeypatch):
    from tests.unit.test_install_service import RecordingRunner

    monkeypatch.setattr(svc.time, "sleep", lambda seconds: None)
    old = tmp_path / "service" / "update"
    (old / "variables").mkdir(parents=True)
    (old / "run").write_text("#!/bin/sh\n")
    runner = RecordingRunner(fail=("is-active",))
    inst = svc.Installer(runner, root=str(tmp_path), echo=lambda line: None)
    cfg = config.load("/dev/null", None, {("general", "hostname"): "kitchen"})
    assert svc.Migration(inst, cfg, "update", str(old), False, lambda line: None).run(
        svc.systemd_files("update", ["/usr/bin/pistop-mdns"])) == 1
    assert runner.calls[-1] == ("systemctl", "disable", "--now", "pistop-mdns-update.timer")
    assert (old / "run").exists()
