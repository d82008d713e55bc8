"""Issue 7: the Debian package, built offline from this checkout, lintian-clean,
installed with apt into a fresh Debian 12 root, and purged without a trace.

The module builds the .deb once (from a copy of the working tree, inside a
network namespace with no network), debootstraps a minimal bookworm (cached as
a tarball under /var/cache/pistop-mdns-tests) and runs `apt-get install
./pistop-mdns_*.deb` in it; the tests then look at that root. They run in file
order: the last one purges the package.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import tempfile
import tomllib
from pathlib import Path

import pytest

from tests.helpers import ENV, REPO, Output, need, need_root, pm_argv
from tests.packaging.support import CLEAN_PATH, FreshRoot, build_deb, debian_mirror, remove_tree, run

pytestmark = pytest.mark.packaging

with open(REPO / "pyproject.toml", "rb") as _f:
    VERSION = tomllib.load(_f)["project"]["version"]
DEB_VERSION = f"{VERSION}-1"
DEB_NAME = f"pistop-mdns_{DEB_VERSION}_all.deb"
DEB_IN_ROOT = f"/tmp/{DEB_NAME}"

# Long-running units and the timer: stopped on remove, restarted on upgrade only
# when the owner enabled them. One-shots: never touched by the package.
LONG_RUNNING = ["pistop-mdns-client.service", "pistop-mdns-rsync.service",
                "pistop-mdns-server.service", "pistop-mdns-update.timer"]
ONE_SHOTS = ["pistop-mdns-update.service", "usb3-poweroff.service"]
UNITS = LONG_RUNNING + ONE_SHOTS
CONFFILE = "/etc/pistop-mdns/pistop-mdns.toml"
COMPLETION = "/usr/share/bash-completion/completions/pistop-mdns"
PYTHON_DEPS = ["python3-click", "python3-netifaces", "python3-sh", "python3-zeroconf"]


@pytest.fixture(scope="module")
def workdir():
    need_root()
    need("dpkg-buildpackage", "dh", "fakeroot", "lintian", "debootstrap", "unshare", "chroot", "tar", "ip",
         package="dpkg-dev debhelper fakeroot lintian debootstrap util-linux coreutils tar iproute2")
    path = Path(tempfile.mkdtemp(prefix="pistop-mdns-deb-"))
    yield path
    remove_tree(path)


@pytest.fixture(scope="module")
def built(workdir):
    """Build the binary package from a copy of the working tree, offline."""
    if not (REPO / "contrib/pistop-mdns.toml").is_file():
        pytest.fail("contrib/pistop-mdns.toml is missing (the example configuration the package ships); "
                    "fix: pistop-mdns config example > contrib/pistop-mdns.toml")
    deb, changes = build_deb(workdir)
    assert deb.name == DEB_NAME, f"built {deb.name}, expected {DEB_NAME}"
    print(f"\n{deb.name}: {deb.stat().st_size} bytes")
    return {"deb": deb, "changes": changes, "src": workdir / "pistop-mdns"}


@pytest.fixture(scope="module")
def root(workdir, built):
    """A fresh Debian 12 root with the package installed by apt (Depends only)."""
    fresh = FreshRoot(workdir, debian_mirror())
    fresh.unpack()
    shutil.copyfile(built["deb"], fresh.path / DEB_IN_ROOT.lstrip("/"))
    before = set(fresh.sh("dpkg-query -W -f '${Package}\\n'").stdout.split())
    fresh.sh("apt-get update -q", timeout=300)
    fresh.install_log = fresh.sh(
        f"apt-get install -y -q --no-install-recommends {DEB_IN_ROOT}", timeout=900).stdout
    after = dict(line.split("=", 1) for line in
                 fresh.sh("dpkg-query -W -f '${Package}=${Version}\\n'").stdout.split())
    fresh.sh("apt-get autoclean -q", timeout=120)  # the shared archive cache keeps current versions only
    fresh.installed_by_apt = sorted(set(after) - before)
    print(f"\napt installed {len(fresh.installed_by_apt)} packages: "
          + " ".join(f"{name}={after[name]}" for name in fresh.installed_by_apt))
    return fresh


# -- the build -----------------------------------------------------------------------------

def test_the_package_holds_the_command_man_page_completion_units_and_conffile(built):
    listing = run(["dpkg-deb", "-c", str(built["deb"])], timeout=60).stdout
    paths = {line.split()[5].lstrip(".") for line in listing.splitlines()}
    expected = {"/usr/bin/pistop-mdns", "/usr/share/man/man1/pistop-mdns.1.gz", COMPLETION, CONFFILE,
                "/usr/share/doc/pistop-mdns/copyright", "/usr/share/doc/pistop-mdns/examples/rsyncd.conf",
                *(f"/usr/share/doc/pistop-mdns/examples/{example}" for example in (
                    "server/etc/exports", "server/etc/mpd.conf", "client/etc/mpd.conf",
                    "client/etc/auto.master.d/mpd.autofs", "client/etc/autofs.mounts")),
                *(f"/lib/systemd/system/{unit}" for unit in UNITS)}
    assert expected <= paths, f"missing from the .deb: {sorted(expected - paths)}"
    conffiles = run(["dpkg-deb", "--info", str(built["deb"]), "conffiles"], timeout=60).stdout.split()
    assert conffiles == [CONFFILE]


def test_depends_come_from_pyproject_as_debian_python_packages(built):
    fields = {name: run(["dpkg-deb", "-f", str(built["deb"]), name], timeout=60).stdout.strip()
              for name in ("Architecture", "Depends", "Recommends", "Suggests")}
    depends = [d.strip() for d in fields["Depends"].split(",")]
    assert fields["Architecture"] == "all"
    for package in PYTHON_DEPS:
        assert any(d.split()[0] == package for d in depends), f"{package} not in Depends: {fields['Depends']}"
    # What a room board plays and mounts with (a board without them is told what it lacks).
    assert fields["Recommends"] == "mpd, autofs, nfs-common, rsync, at"
    assert fields["Suggests"] == "mpc, libnfs-utils, avahi-utils, uhubctl, daemontools"


def test_lintian_reports_no_errors_and_no_warnings(built):
    # TMPDIR: lintian 2.116 leaves its mldbm-* scratch files behind; keep them in the work dir.
    workdir = str(built["src"].parent)
    result = run(["lintian", "--fail-on", "error,warning", "--display-info",
                  str(built["deb"]), str(built["changes"])],
                 timeout=600, check=False, env={"PATH": CLEAN_PATH, "HOME": workdir, "TMPDIR": workdir,
                                                "LANG": "C.UTF-8"})
    print(f"\nlintian (exit {result.returncode}):\n{result.stdout}{result.stderr}")
    tags = [line for line in result.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    assert result.returncode == 0 and not tags, f"lintian:\n{result.stdout}{result.stderr}"


def test_the_build_writes_the_bash_completion_click_generates(built):
    completion = (built["src"] / "debian/pistop-mdns" / COMPLETION.lstrip("/")).read_text()
    assert "complete -o nosort -F _pistop_mdns_completion pistop-mdns" in completion
    assert "_PISTOP_MDNS_COMPLETE=bash_complete" in completion


# -- installed in a fresh Debian 12 ---------------------------------------------------------

def test_apt_installs_only_debian_packages(root):
    assert "pistop-mdns" in root.installed_by_apt
    for package in PYTHON_DEPS:
        assert package in root.installed_by_apt, f"apt did not install {package}: {root.installed_by_apt}"
    # `apt list` marks a package no configured repository offers as "local".
    listed = root.sh("apt list --installed 2>/dev/null").stdout
    local = [line.split("/")[0] for line in listed.splitlines() if re.search(r"[\[,]local[\],]", line)]
    assert local == ["pistop-mdns"], f"installed packages that Debian does not offer: {local}"
    modules = root.sh(
        "python3 -c 'import click, netifaces, sh, zeroconf, pistop_mdns\n"
        "for m in (click, netifaces, sh, zeroconf, pistop_mdns): print(m.__file__)'").stdout.split()
    for path in modules:
        assert path.startswith("/usr/lib/python3/dist-packages/"), f"imported from outside Debian's tree: {path}"
        root.sh(f"dpkg -S {path}")  # every module file belongs to a Debian package
    assert root.sh("command -v pip pip3", check=False).stdout.strip() == "", "pip is installed"
    assert root.sh("python3 -m pip --version", check=False).returncode != 0, "pip is importable"
    assert root.sh("find /usr/local -name '*.py' -o -name '*.dist-info'").stdout.strip() == ""


def test_recommended_and_suggested_packages_exist_in_bookworm(root, built):
    names = []
    for field in ("Recommends", "Suggests"):
        value = run(["dpkg-deb", "-f", str(built["deb"]), field], timeout=60).stdout
        names += re.findall(r"[a-z0-9][a-z0-9+.-]+", re.sub(r"\([^)]*\)", "", value))
    result = root.sh(f"apt-cache show --no-all-versions {' '.join(names)} | grep '^Package:'")
    assert sorted(set(result.stdout.split()[1::2])) == sorted(set(names))


def test_version(root):
    assert root.sh("pistop-mdns --version").stdout.strip() == f"pistop-mdns, version {VERSION}"


def test_man_page(root):
    assert root.sh("man -w pistop-mdns").stdout.strip() == "/usr/share/man/man1/pistop-mdns.1.gz"


def test_bash_completion_completes_the_commands(root):
    root.sh(f"bash -c '. {COMPLETION} && complete -p pistop-mdns'")
    words = root.sh("COMP_WORDS='pistop-mdns br' COMP_CWORD=1 _PISTOP_MDNS_COMPLETE=bash_complete "
                    "pistop-mdns").stdout.split()
    assert "plain,browse" in words


def test_the_shipped_example_is_the_current_one_and_config_check_accepts_it(root):
    conffiles = root.sh("dpkg-query -W -f '${Conffiles}' pistop-mdns").stdout
    assert CONFFILE in conffiles
    shipped = root.sh(f"cat {CONFFILE}").stdout
    assert shipped == root.sh("pistop-mdns config example").stdout, (
        "contrib/pistop-mdns.toml differs from `pistop-mdns config example`; "
        "fix: pistop-mdns config example > contrib/pistop-mdns.toml")
    assert all(line == "" or line.startswith(("#", "[")) for line in shipped.splitlines()), (
        "every key of the example must be commented out")
    assert root.sh("pistop-mdns config check").stdout.strip() == f"configuration ok ({CONFFILE})"
    root.sh(f"pistop-mdns --config {CONFFILE} config check")


def test_systemd_analyze_verify_accepts_the_installed_units(root):
    # verify checks that each ExecStart program exists: rsync (a Recommends) and
    # uhubctl (a Suggests) are what pistop-mdns-rsync and usb3-poweroff run.
    root.sh("apt-get install -y -q --no-install-recommends rsync uhubctl", timeout=600)
    units = " ".join(f"/lib/systemd/system/{unit}" for unit in UNITS)
    result = root.sh(f"systemd-analyze verify {units}", check=False)
    assert result.returncode == 0 and result.stderr.strip() == "", (
        f"systemd-analyze verify (exit {result.returncode}):\n{result.stdout}{result.stderr}")


def test_no_unit_is_enabled_on_install(root):
    states = root.sh(f"systemctl is-enabled {' '.join(UNITS)}", check=False).stdout.split()
    assert all(state in ("disabled", "static") for state in states) and len(states) == len(UNITS), states
    links = root.sh("find /etc/systemd -lname '*pistop*' -o -lname '*usb3-poweroff*'").stdout.strip()
    assert links == "", f"enabled on install: {links}"


# systemctl verbs that start, stop or restart a unit.
CHANGES_STATE = {"start", "restart", "try-restart", "reload", "reload-or-restart", "try-reload-or-restart",
                 "stop", "kill", "isolate"}
SYSTEMCTL_SHIM = """#!/bin/sh
# Records what the maintainer scripts ask systemd to do; answers like a systemd
# on which none of this package's units runs. Never starts anything.
echo "$*" >> /tmp/systemctl.log
case " $* " in
  *" is-enabled "*) SYSTEMD_OFFLINE=1 exec /usr/bin/systemctl "$@" ;;
  *" is-active "*) exit 3 ;;
esac
exit 0
"""


def test_maintainer_scripts_start_nothing_and_stop_the_units_on_remove(root):
    """With a (recorded) systemd running: a fresh install starts nothing and says
    nothing that reads like a problem, an upgrade only try-restarts the
    long-running units (systemd restarts those that run), removing stops them."""
    shim = root.path / "usr/local/sbin/systemctl"
    policy = root.path / "usr/sbin/policy-rc.d"
    running = root.path / "run/systemd/system"
    log = root.path / "tmp/systemctl.log"
    shim.write_text(SYSTEMCTL_SHIM)
    shim.chmod(0o755)
    policy.write_text("#!/bin/sh\nexit 0\n")
    made = [d for d in (running.parent, running) if not d.exists()]
    running.mkdir(parents=True, exist_ok=True)
    # apt runs dpkg, and so the maintainer scripts, with its own DPkg::Path.
    apt_get = "apt-get -o DPkg::Path=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin -y -q"

    def actions(script: str) -> list[str]:
        log.write_text("")
        said = root.sh(script.replace("apt-get", apt_get), timeout=300)
        # Issue 12: deb-systemd-invoke's "is a disabled or a static unit, not starting it".
        worrying = [line for line in (said.stdout + said.stderr).splitlines()
                    if re.search(r"disabled or a static unit|not starting|warning|error|^[WE]: ", line, re.I)]
        assert worrying == [], f"{script} said:\n" + "\n".join(worrying)
        return [line for line in log.read_text().splitlines() if CHANGES_STATE & set(line.split())]

    try:
        removed = actions("apt-get purge pistop-mdns")
        assert any(line.split()[-len(LONG_RUNNING):] == LONG_RUNNING and " stop " in f" {line} "
                   for line in removed), f"prerm did not stop {LONG_RUNNING}: {removed}"
        assert not any(unit in line for line in removed for unit in ONE_SHOTS), removed

        assert actions(f"apt-get install --no-install-recommends {DEB_IN_ROOT}") == [], (
            "a fresh install started something")
        upgraded = actions(f"apt-get install --reinstall {DEB_IN_ROOT}")
        assert [line.split() for line in upgraded] == [["try-restart", *LONG_RUNNING]], (
            f"an upgrade may only restart what runs: {upgraded}")

        root.sh("SYSTEMD_OFFLINE=1 /usr/bin/systemctl enable pistop-mdns-server.service")
        actions(f"apt-get install --reinstall {DEB_IN_ROOT}")
        assert "enabled" == root.sh(
            "SYSTEMD_OFFLINE=1 systemctl is-enabled pistop-mdns-server.service").stdout.strip()
        root.sh("SYSTEMD_OFFLINE=1 /usr/bin/systemctl disable pistop-mdns-server.service")
    finally:
        shim.unlink()
        policy.write_text("#!/bin/sh\nexit 101\n")
        for directory in reversed(made):
            directory.rmdir()
        log.unlink(missing_ok=True)


def test_browse_from_the_installed_root_sees_a_server_on_the_lan(root, make_lan):
    lan = make_lan(["musicpi", "kitchen"])
    lan.wait_for_multicast()
    server = lan["musicpi"].spawn(
        pm_argv("server", "--export", "/srv/music", "--mpd-port", "6600", "--state-dir", "/run/pm"), env=ENV)
    Output(server, "server").wait(r"advertising", timeout=30)
    browse = lan["kitchen"].run(["chroot", str(root.path), "pistop-mdns", "browse", "--timeout", "2", "--json"],
                                timeout=60, env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "HOME": "/root"})
    assert browse.returncode == 0, f"browse from the installed root: exit {browse.returncode}\n{browse.stderr}"
    found = json.loads(browse.stdout)
    assert [(s["instance"], s["addresses"], s["export"], s["mpd_port"]) for s in found] == [
        ("musicpi", [lan["musicpi"].address], "/srv/music", 6600)], found


# Left out of the before/after comparison: dpkg's and apt's own state, and what belongs to
# the package itself (its conffile, its state directory, deb-systemd-helper's notes on its units).
BOARD_LISTING = (
    "find /etc /var/lib -path /var/lib/dpkg -prune -o -path /var/lib/apt -prune -o -path /var/lib/systemd -prune "
    "-o -path /etc/pistop-mdns -prune -o -path /var/lib/pistop-mdns -prune -o -printf '%p %y %m %U:%G %l\\n' "
    "| sort; find /etc -path /etc/pistop-mdns -prune -o -type f -exec sha256sum {} + | sort")
BRING_UP = """
from pistop_mdns import config, files, fresh
cfg = fresh.client(config.load())
files.atomic_write(cfg.client.autofs_map, files.rewrite_autofs_map(
    files.read_text(cfg.client.autofs_map), cfg.client.autofs_key, location="198.18.0.11:/srv/music",
    options=cfg.client.autofs_options))
files.atomic_write(cfg.client.mpd_conf, files.rewrite_mpd_conf(
    files.read_text(cfg.client.mpd_conf), proxy_host="198.18.0.11", proxy_port=6600,
    music_directory=cfg.client.mountpoint + "/Music", add_proxy_block=True, drop_db_file=True))
"""


def test_purge_takes_back_what_the_client_set_up_on_a_board_nobody_configured(root):
    """Debian's mpd.conf, autofs and nfs-common (stand-ins: the root has only the Depends), the
    client's set-up at its start and a bring-up's writes; then `apt purge` leaves /etc as it was,
    and the .deb installs again offline (--no-install-recommends, its Depends present)."""
    debian_conf = Path("/etc/mpd.conf")
    if not debian_conf.is_file():
        pytest.fail("this test copies Debian's /etc/mpd.conf from this machine; fix: apt-get install mpd")
    shutil.copyfile(debian_conf, root.path / "etc/mpd.conf")
    root.sh("chmod 640 /etc/mpd.conf && mkdir -p /var/lib/mpd/music /etc/auto.master.d && "
            "for p in /usr/sbin/automount /usr/sbin/mount.nfs4; do printf '#!/bin/sh\\n' > $p; chmod 755 $p; done")
    before = root.sh(BOARD_LISTING).stdout
    prepared = root.sh("python3 -c 'import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
                       "from pistop_mdns import config, fresh\n"
                       "sys.exit(fresh.prepare(fresh.client(config.load()), dry_run=False))'").stdout
    assert "set up for autofs: created /etc/auto.master.d/mpd.autofs, /etc/autofs.mounts, /var/lib/mpd/MDrive" \
        in prepared
    root.sh(f"python3 -c '{BRING_UP}'")
    assert 'host "198.18.0.11"' in root.sh("cat /etc/mpd.conf").stdout
    assert root.sh(BOARD_LISTING).stdout != before
    root.sh("apt-get purge -y -q pistop-mdns", timeout=300)
    after = root.sh(BOARD_LISTING).stdout
    assert after == before, "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True)))
    root.sh(f"unshare --net apt-get install -y -q --no-install-recommends {DEB_IN_ROOT}", timeout=300)
    assert root.sh("pistop-mdns --version").stdout.strip() == f"pistop-mdns, version {VERSION}"


def test_purge_leaves_no_file_behind(root):
    files = [p for p in root.sh("dpkg -L pistop-mdns").stdout.split() if p != "/."]
    # What the owner and the program add: a key, a hook, state and runtime files,
    # and the units `install-service` writes and enables (as this checkout's
    # install-service --root does it), with a `systemctl edit` drop-in.
    root.sh("mkdir -p /etc/pistop-mdns/hooks /var/lib/pistop-mdns /run/pistop-mdns && "
            "echo secret > /etc/pistop-mdns/key && touch /etc/pistop-mdns/hooks/up "
            "/var/lib/pistop-mdns/state /run/pistop-mdns/client.json && "
            "pistop-mdns --version >/dev/null")
    for role in ("client", "update"):
        run(pm_argv("install-service", role, "--init", "systemd", "--root", str(root.path)), env=ENV, timeout=120)
    dropin = root.path / "etc/systemd/system/pistop-mdns-client.service.d/override.conf"
    dropin.parent.mkdir(exist_ok=True)
    dropin.write_text("[Service]\nNice=5\n")
    enabled = root.sh("find /etc/systemd -name '*pistop*'").stdout.split()
    assert "/etc/systemd/system/multi-user.target.wants/pistop-mdns-client.service" in enabled, enabled
    assert "/etc/systemd/system/timers.target.wants/pistop-mdns-update.timer" in enabled, enabled
    root.sh(f"rm -f {DEB_IN_ROOT} && apt-get purge -y -q pistop-mdns", timeout=300)
    status = root.sh("dpkg-query -W -f '${Status}' pistop-mdns", check=False)
    assert status.returncode != 0 or "not-installed" in status.stdout, status.stdout
    left = []
    for path in files:
        if not (root.path / path.lstrip("/")).exists() and not (root.path / path.lstrip("/")).is_symlink():
            continue
        # A directory may stay when another package owns it too (/usr, /etc, ...).
        if not (root.path / path.lstrip("/")).is_dir() or root.sh(f"dpkg -S {path}", check=False).returncode:
            left.append(path)
    assert left == [], f"left behind by purge: {left}"
    for directory in ("/etc/pistop-mdns", "/var/lib/pistop-mdns", "/run/pistop-mdns"):
        assert not (root.path / directory.lstrip("/")).exists(), f"{directory} survived the purge"
    # /var/cache/man holds man-db's formatted pages, which man-db itself expires.
    strays = root.sh("find / -path /proc -prune -o -path /var/cache/apt/archives -prune -o "
                     "-path /var/cache/man -prune -o "
                     "\\( -name '*pistop*' -o -name '*usb3-poweroff*' \\) -print").stdout.split()
    assert strays == [], f"files named after the package remain: {strays}"
