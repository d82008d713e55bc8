"""`systemd-analyze verify` on every unit in contrib/ (and the timer's interval drop-in).

PID 1 is not systemd on a test machine, so verify runs offline against a
throwaway root (`--root`): a copy of this machine's /lib/systemd/system (so
network-online.target, timers.target, ... resolve) plus our units in
etc/systemd/system. verify insists that every ExecStart= binary exists and
is executable, and under --root it looks inside that root: each one gets an
executable stub there. The unit files themselves are verified unchanged.
Binaries that are not installed on a test machine may be stubs; every other
ExecStart= path must exist on this machine, so a wrong path fails the test.
verify reports unknown keys and bad values only as warnings (exit status 0),
so any line it prints about our units fails the test too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pistop_mdns.actions import install_service
from tests.helpers import need

pytestmark = pytest.mark.components

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
UNITS = sorted(p.name for p in CONTRIB.iterdir() if p.suffix in (".service", ".timer"))
# Ours (installed by the package) and uhubctl (Debian's uhubctl package, not on test machines).
MAY_BE_ABSENT = {"/usr/bin/pistop-mdns", "/usr/sbin/uhubctl"}


def exec_paths(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^Exec\w+=[-@:+!]*(\S+)", text, re.MULTILINE)]


@pytest.fixture(scope="module")
def systemd_root(tmp_path_factory):
    need("systemd-analyze", package="systemd")
    root = tmp_path_factory.mktemp("systemd-root")
    shutil.copytree("/lib/systemd/system", root / "lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    return root


def verify(root: Path, files: dict[str, str]) -> tuple[int, str]:
    """Put `files` (path under etc/systemd/system -> text) into root, stub their binaries, verify."""
    unit_dir = root / "etc/systemd/system"
    for name, text in files.items():
        (unit_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (unit_dir / name).write_text(text)
        for path in exec_paths(text):
            stub = root / path.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\n")
            stub.chmod(0o755)
    units = [str(unit_dir / n) for n in files if not Path(n).parent.name.endswith(".d")]
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", "--recursive-errors=no", f"--root={root}",
                           *units], capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def problems(status: int, output: str, names: list[str]) -> list[str]:
    about_ours = [line for line in output.splitlines() if any(Path(n).name in line for n in names)]
    return about_ours + ([f"exit status {status}"] if status != 0 else [])


@pytest.mark.parametrize("name", UNITS)
def test_unit_verifies_cleanly(systemd_root, name):
    text = (CONTRIB / name).read_text()
    files = {name: text}
    if name.endswith(".timer"):  # a timer needs the unit it starts
        service = name.replace(".timer", ".service")
        files[service] = (CONTRIB / service).read_text()
    status, output = verify(systemd_root, files)
    assert problems(status, output, list(files)) == [], output


@pytest.mark.parametrize("name", UNITS)
def test_exec_start_binaries_exist_here_or_are_known_to_be_absent(name):
    for path in exec_paths((CONTRIB / name).read_text()):
        assert path in MAY_BE_ABSENT or Path(path).is_file(), f"{name}: {path} does not exist"


def test_the_update_timer_with_its_interval_drop_in_verifies(systemd_root):
    files = {f.path.removeprefix("/etc/systemd/system/"): f.text
             for f in install_service.systemd_files("update", [install_service.PROGRAM], interval=3600)}
    assert "pistop-mdns-update.timer.d/interval.conf" in files
    status, output = verify(systemd_root, files)
    assert problems(status, output, list(files)) == [], output


def test_verify_does_catch_a_broken_unit(systemd_root):
    """The check above can fail: a misspelt key and a missing binary are both reported."""
    text = (CONTRIB / "pistop-mdns-server.service").read_text()
    status, output = verify(systemd_root, {"broken-a.service": text.replace("Restart=", "Restrat=")})
    assert problems(status, output, ["broken-a.service"]) != []
    bad = text.replace("ExecStart=/usr/bin/pistop-mdns", "ExecStart=/usr/bin/pistop-mdns-nowhere")
    (systemd_root / "etc/systemd/system/broken-b.service").write_text(bad)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", "--recursive-errors=no",
                           f"--root={systemd_root}", str(systemd_root / "etc/systemd/system/broken-b.service")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "not executable" in proc.stderr
