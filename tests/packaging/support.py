"""What the packaging and system tests share: a clean copy of the checkout,
the .deb built from it offline, commands with timeouts that take their whole
process group down, the Debian mirror this machine uses, and a fresh Debian 12
root (debootstrapped once, cached as a tarball) to run commands in, chrooted
inside a private mount namespace.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import REPO

SUITE = "bookworm"
# A Pi's base system has both; `man -w` and `systemd-analyze verify` need them.
BASE_PACKAGES = ("systemd", "man-db")
CACHE = Path(os.environ.get("PISTOP_TEST_CACHE", "/var/cache/pistop-mdns-tests"))
# A cached root older than this is rebuilt (apt-get update runs on every use anyway).
CACHE_MAX_AGE = 30 * 24 * 3600
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
ROOT_ENV = {"PATH": CLEAN_PATH, "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}

# Not part of the source: VCS data, virtualenvs, caches, build output.
_NOT_SOURCE = {".git", ".hypothesis", ".pytest_cache", "__pycache__", ".pybuild", "build", "dist",
               ".mypy_cache", ".ruff_cache", ".tox"}
_NOT_SOURCE_IN_DEBIAN = {".debhelper", "pistop-mdns", "tmp", "files", "debhelper-build-stamp"}


def copy_checkout(dest: Path) -> Path:
    """Copy the working tree (uncommitted work included) to dest/pistop-mdns, minus
    .git, virtualenvs and build artefacts, so builds never write into the checkout."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in _NOT_SOURCE or n.startswith(".venv") or n.endswith(".egg-info")}
        if Path(directory) == REPO / "debian":
            skip |= {n for n in names if n in _NOT_SOURCE_IN_DEBIAN or n.endswith((".substvars", ".log"))}
        return skip

    target = dest / "pistop-mdns"
    shutil.copytree(REPO, target, ignore=ignore, symlinks=True)
    return target


def run(argv: list[str], *, timeout: float, cwd: Path | str | None = None, env: dict | None = None,
        check: bool = True, what: str | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    """Run argv in its own process group; on timeout kill the whole group and fail."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, text=True, start_new_session=True,
                            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(f"{what or argv[0]}: no result after {timeout} s; output:\n{out[-4000:]}\n{err[-4000:]}")
    done = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check and proc.returncode != 0:
        pytest.fail(f"{what or ' '.join(argv)}: exit {proc.returncode}\n"
                    f"--- stdout (end)\n{out[-6000:]}\n--- stderr (end)\n{err[-6000:]}")
    return done


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def build_deb(workdir: Path, *, nocheck: bool = False) -> tuple[Path, Path]:
    """Build the binary package from a copy of the working tree, offline:
    (the .deb, the .changes), both in workdir; the copy is workdir/pistop-mdns.

    `unshare --net`: a network namespace with only loopback proves the build is
    offline (the unit tests talk to 127.0.0.1, as they may on Debian's build
    daemons). A clean PATH: a pyenv or venv python3 on PATH must not stand in for
    Debian's. `nocheck` skips the unit tests at build time (DEB_BUILD_OPTIONS),
    for callers that only need the package.
    """
    src = copy_checkout(workdir)
    env = {"PATH": CLEAN_PATH, "HOME": str(workdir), "LANG": "C.UTF-8"}
    if nocheck:
        env["DEB_BUILD_OPTIONS"] = "nocheck"
    result = run(["unshare", "--net", "sh", "-c", "ip link set lo up && exec dpkg-buildpackage -us -uc -b"],
                 cwd=src, timeout=900, env=env, what="dpkg-buildpackage -us -uc -b (offline)")
    debs = sorted(workdir.glob("pistop-mdns_*_all.deb"))
    changes = sorted(workdir.glob("pistop-mdns_*.changes"))
    if len(debs) != 1 or len(changes) != 1:
        pytest.fail(f"expected one .deb and one .changes in {workdir} after the build, found "
                    f"{[p.name for p in debs + changes]}:\n{result.stdout[-3000:]}")
    return debs[0], changes[0]


# -- the Debian mirror ---------------------------------------------------------------

def mirrors_in(text: str, deb822: bool) -> list[tuple[str, list[str], list[str]]]:
    """(uri, suites, components) of every enabled `deb` entry of an apt sources file."""
    found = []
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            key = None
            for line in stanza.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                if line[0] in " \t" and key:
                    fields[key] += " " + line.strip()
                    continue
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
            if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
                continue
            for uri in fields.get("uris", "").split():
                found.append((uri, fields.get("suites", "").split(), fields.get("components", "").split()))
    else:
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            line = re.sub(r"\[[^\]]*\]", " ", line)  # [arch=... signed-by=...]
            words = line.split()
            if len(words) >= 3 and words[0] == "deb":
                found.append((words[1], [words[2]], words[3:]))
    return found


def debian_mirror(suite: str = SUITE, etc_apt: Path = Path("/etc/apt")) -> str:
    """The mirror this machine's apt uses for `suite main` (only that one is reachable)."""
    files = [(etc_apt / "sources.list", False)]
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        files += [(p, p.suffix == ".sources") for p in sorted(parts.iterdir())
                  if p.suffix in (".list", ".sources")]
    for path, deb822 in files:
        if not path.is_file():
            continue
        for uri, suites, components in mirrors_in(path.read_text(encoding="utf-8", errors="replace"), deb822):
            if suite in suites and "main" in components:
                return uri.rstrip("/")
    pytest.fail(f"no `deb URI {suite} main` entry in {etc_apt}/sources.list(.d): "
                f"the fresh root needs this machine's Debian mirror")


# -- the fresh root --------------------------------------------------------------------

def _debootstrap_version() -> str:
    return run(["dpkg-query", "-W", "-f=${Version}", "debootstrap"], timeout=30).stdout.strip()


def base_tarball(mirror: str) -> Path:
    """A debootstrapped minimal bookworm as a tarball, made once and reused.

    The key names everything that decides its contents (suite, mirror, packages,
    debootstrap's version); a tarball older than CACHE_MAX_AGE is made again.
    """
    key_text = f"{SUITE} {mirror} minbase {','.join(BASE_PACKAGES)} debootstrap={_debootstrap_version()}"
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"{SUITE}-{key}.tar"
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second test run waits instead of building it twice
        if tarball.exists() and time.time() - tarball.stat().st_mtime < CACHE_MAX_AGE:
            return tarball
        work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=CACHE))
        try:
            target = work / "root"
            # Private mount namespace: whatever debootstrap mounts (proc, sys) dies with it.
            run(["unshare", "--mount", "--propagation", "private",
                 "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                 SUITE, str(target), mirror],
                timeout=1200, env={**ROOT_ENV}, what=f"debootstrap {SUITE} from {mirror}")
            for deb in (target / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            (target / "etc/apt/sources.list").write_text(f"deb {mirror} {SUITE} main\n")
            part = work / "root.tar"
            run(["tar", "-C", str(target), "--numeric-owner", "-cf", str(part), "."], timeout=600)
            part.replace(tarball)
            os.utime(tarball)
        finally:
            remove_tree(work)
        for old in CACHE.glob(f"{SUITE}-*.tar"):
            if old != tarball:
                old.unlink()
        return tarball


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if (p + "/").startswith(prefix)]


def remove_tree(path: Path) -> None:
    """rm -rf, but never through a mount point (the archive cache is bind-mounted in roots)."""
    if not path.exists():
        return
    mounted = _mounts_under(path)
    if mounted:
        raise RuntimeError(f"not removing {path}: still mounted there: {mounted}")
    run(["rm", "-rf", "--one-file-system", str(path)], timeout=300)


class FreshRoot:
    """A Debian 12 root in a temporary directory, unpacked from the cached tarball."""

    def __init__(self, parent: Path, mirror: str):
        self.mirror = mirror
        self.path = parent / "root"
        self.archives = CACHE / "archives"  # downloaded .debs, kept between runs

    def unpack(self) -> None:
        tarball = base_tarball(self.mirror)
        self.path.mkdir()
        run(["tar", "-C", str(self.path), "--numeric-owner", "-xpf", str(tarball)], timeout=600)
        (self.archives / "partial").mkdir(parents=True, exist_ok=True)
        # Services must not start in this machine's namespaces (Debian's policy-rc.d convention).
        policy = self.path / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        shutil.copyfile("/etc/resolv.conf", self.path / "etc/resolv.conf")

    def sh(self, script: str, *, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        """Run a shell script chrooted in this root, with /proc, /dev/pts and the archive
        cache mounted only inside a private mount namespace (gone when the script ends)."""
        wrapper = (
            'set -e; R="$1"; A="$2"; S="$3"\n'
            'mount -t proc proc "$R/proc"\n'
            'mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"\n'
            'mount --bind "$A" "$R/var/cache/apt/archives"\n'
            'exec chroot "$R" /bin/sh -c "$S"'
        )
        return run(["unshare", "--mount", "--propagation", "private", "sh", "-c", wrapper, "sh",
                    str(self.path), str(self.archives), script],
                   timeout=timeout, env=dict(ROOT_ENV), check=check, what=f"in the fresh root: {script}")

    def remove(self) -> None:
        remove_tree(self.path)
