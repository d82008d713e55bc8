"""Real apt, dpkg, at and atd: `pistop-mdns update` against a local file repository.

Nothing of the machine's own packages is touched. apt reads its whole
configuration from APT_CONFIG (read before /etc/apt, whose apt.conf.d hooks
would otherwise still run): `Dir` puts its sources, lists, cache, logs and
dpkg status in a throwaway root, and dpkg gets `--root` and `--log` there
too. The production command lines stay plain; APT_CONFIG is apt's own way to
point them elsewhere, and at(1) carries it into the queued job.

The repository holds two throwaway packages in version 2.0 (one of them
named pistop-mdns, to see it kept back while a server has clients); the
throwaway root has 1.0 of both installed.

atd runs in a private mount namespace with its own spool (a tmpfs over
/var/spool/cron/atjobs, whose path is compiled into at and atd) and its own
/run (atd.pid, which at signals). The upgrade is queued for `now + 1 minute`
as in production; rather than wait that minute, the test takes the queued
job out (atrm, so atd cannot run it too) and runs exactly its text with sh,
as atd would.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from pistop_mdns import statefile
from tests.helpers import ENV, need, need_root, pm_argv

pytestmark = pytest.mark.components

PACKAGES = ("pistop-mdns-testpkg", "pistop-mdns")


def sh(argv: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=kw.pop("timeout", 60), **kw)
    assert proc.returncode == 0, f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr}{proc.stdout}"
    return proc


def build_deb(work: Path, name: str, version: str) -> Path:
    tree = work / f"{name}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
        f"Maintainer: pistop-mdns tests <tests@example.invalid>\n"
        f"Description: throwaway package of the pistop-mdns tests\n")
    (tree / "usr" / "share" / name).mkdir(parents=True)
    (tree / "usr" / "share" / name / "version").write_text(version + "\n")
    deb = work / f"{name}_{version}_all.deb"
    sh(["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", str(tree), str(deb)])
    return deb


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    need_root()
    need("dpkg-deb", "dpkg", "apt-get", "apt-cache", package="dpkg apt")
    work = tmp_path_factory.mktemp("debs")
    return {(n, v): build_deb(work, n, v) for n in PACKAGES for v in ("1.0", "2.0")}


@pytest.fixture
def apt_root(tmp_path, debs):
    """A throwaway root with 1.0 installed, a repository with 2.0, and an APT_CONFIG for both."""
    repo = tmp_path / "repo"
    repo.mkdir()
    stanzas = []
    for name in PACKAGES:
        deb = debs[(name, "2.0")]
        (repo / deb.name).write_bytes(deb.read_bytes())
        fields = sh(["dpkg-deb", "-f", str(repo / deb.name)]).stdout.rstrip("\n")
        digest = sh(["sha256sum", str(repo / deb.name)]).stdout.split()[0]
        stanzas.append(f"{fields}\nFilename: ./{deb.name}\nSize: {deb.stat().st_size}\nSHA256: {digest}\n")
    (repo / "Packages").write_text("\n".join(stanzas))
    root = tmp_path / "root"
    for d in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d", "var/lib/dpkg/updates",
              "var/lib/dpkg/info", "var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/log/apt"):
        (root / d).mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("")
    (root / "etc/apt/sources.list").write_text(f"deb [trusted=yes] file:{repo} ./\n")
    dpkg_log = root / "var/log/dpkg.log"
    apt_config = tmp_path / "apt.conf"
    apt_config.write_text(
        f'Dir "{root}/";\n'
        'APT::Sandbox::User "root";\n'
        'Acquire::Languages "none";\n'
        f'DPkg::Options {{ "--root={root}"; "--log={dpkg_log}"; }};\n')
    sh(["dpkg", f"--root={root}", f"--log={dpkg_log}", "-i", *(str(debs[(n, "1.0")]) for n in PACKAGES)])
    env = {**ENV, "APT_CONFIG": str(apt_config)}
    sh(["apt-get", "-qy", "update"], env=env, timeout=120)
    yield root, env
    # The machine's own dpkg never heard of the throwaway packages.
    for name in PACKAGES:
        host = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True,
                              timeout=30)
        assert "installed" not in host.stdout, f"{name} reached the machine's own dpkg"
    assert "pistop-mdns-testpkg" not in Path("/var/log/dpkg.log").read_text(errors="replace")


def installed(root: Path, name: str) -> str:
    return sh(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Version}", name]).stdout


def update(env, state_dir: Path, *args: str, wrap: list[str] | None = None) -> subprocess.CompletedProcess:
    argv = pm_argv("update", "--packages", "pistop-mdns-testpkg,pistop-mdns,mpdev,raspotify",
                   "--state-dir", str(state_dir), *args)
    return subprocess.run([*(wrap or []), *argv], capture_output=True, text=True, env=env, timeout=300)


def test_upgrades_directly_without_at(apt_root, tmp_path):
    root, env = apt_root
    proc = update(env, tmp_path / "state", "--use-at", "no")
    assert proc.returncode == 0, proc.stderr
    assert installed(root, "pistop-mdns-testpkg") == "2.0" and installed(root, "pistop-mdns") == "2.0"
    assert (root / "usr/share/pistop-mdns-testpkg/version").read_text() == "2.0\n"
    assert "update: upgradable: pistop-mdns-testpkg pistop-mdns" in proc.stderr
    assert "update: upgraded pistop-mdns-testpkg pistop-mdns" in proc.stderr


def test_dry_run_prints_the_plan_and_changes_nothing(apt_root, tmp_path):
    root, env = apt_root
    proc = update(env, tmp_path / "state", "--use-at", "no", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "would refresh: apt-get -qy update",
        "would run: apt-get -qy -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "
        "--only-upgrade install pistop-mdns-testpkg pistop-mdns",
    ]
    assert installed(root, "pistop-mdns-testpkg") == "1.0"


def test_nothing_to_do_when_everything_is_current(apt_root, tmp_path):
    root, env = apt_root
    assert update(env, tmp_path / "state", "--use-at", "no").returncode == 0
    again = update(env, tmp_path / "state", "--use-at", "no")
    assert again.returncode == 0 and "no upgrade found" in again.stderr


@pytest.fixture
def atd_namespace(tmp_path):
    """atd -f in a private mount namespace with its own /run and spool; yields argv to enter it."""
    need("at", "atd", "atq", "atrm", "unshare", "nsenter", package="at util-linux")
    setup = (
        "set -e; mount -t tmpfs -o mode=755 tmpfs /run; "
        "for d in /var/spool/cron/atjobs /var/spool/cron/atspool; do "
        "  mount -t tmpfs -o mode=1770 tmpfs $d; chown daemon:daemon $d; done; "
        "install -o daemon -g daemon -m 600 /dev/null /var/spool/cron/atjobs/.SEQ; "
        "echo ready; exec atd -f"
    )
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", setup],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        yield ["nsenter", "-t", str(proc.pid), "-m", "--"]
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_with_at_the_upgrade_is_queued_and_a_server_with_clients_keeps_itself(apt_root, tmp_path, atd_namespace):
    root, env = apt_root
    enter = atd_namespace
    state = tmp_path / "state"
    # A server runs on this host (this test process stands in for it) with one client connected.
    statefile.write(str(state), "server", {"role": "server", "clients": [{"name": "kitchen"}]})
    proc = update(env, state, "--use-at", "yes", wrap=enter)
    assert proc.returncode == 0, proc.stderr
    assert "1 client(s) connected (kitchen): not upgrading pistop-mdns" in proc.stderr
    assert re.search(r"upgrade of pistop-mdns-testpkg queued with at \(job \d+", proc.stderr), proc.stderr
    jobs = sh([*enter, "atq"]).stdout.split("\n")
    assert len([j for j in jobs if j.strip()]) == 1, jobs
    job = jobs[0].split()[0]
    text = sh([*enter, "at", "-c", job]).stdout
    assert text.rstrip().endswith(
        "env DEBIAN_FRONTEND=noninteractive apt-get -qy -o Dpkg::Options::=--force-confdef "
        "-o Dpkg::Options::=--force-confold --only-upgrade install pistop-mdns-testpkg")
    assert f"APT_CONFIG={env['APT_CONFIG']}" in text  # at keeps the environment of the update
    assert installed(root, "pistop-mdns-testpkg") == "1.0"  # queued, not yet run
    sh([*enter, "atrm", job])
    sh(["sh", "-s"], input=text, timeout=300)
    assert installed(root, "pistop-mdns-testpkg") == "2.0"
    assert installed(root, "pistop-mdns") == "1.0"  # kept back while the client is connected
