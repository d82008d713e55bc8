"""Keep the music software up to date, as pistop's `update` service did.

For the packages in [update] packages (pistop's UPGRADE): detect the package
manager, refresh its lists, find which of those packages are installed and
upgradable, and upgrade just those -- through `at now + 1 minute` when at(1)
is there (so the upgrade outlives this process, whatever it restarts), or
directly. Two packages are kept back as pistop kept them back:

- pistop-mdns itself while the server on this host has connected clients
  (upgrading restarts the server, and every room would stop its music);
- daemontools when the upgrade would run directly (no at), or while clients
  are connected: its upgrade restarts svscan and with it every supervised
  service, this update included.

Everything that decides is pure (`detect`, `keep_back`, `parse_*`,
`at_script`); `run_update` runs the commands through the Runner. The commands
are the plain ones; tests point apt at a throwaway root with APT_CONFIG (apt's
own way to read a different configuration), never through extra arguments.
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
from typing import Callable

from pistop_mdns import commands, statefile
from pistop_mdns.config import Config
from pistop_mdns.executor import Result, Runner

log = logging.getLogger(__name__)

SELF_PACKAGE = "pistop-mdns"
SUPERVISOR_PACKAGE = "daemontools"

# Which program reveals which package manager, in pistop's order of preference.
MANAGERS = (("apt", "apt-get"), ("dnf", "dnf"), ("yum", "yum"), ("zypper", "zypper"))

# A refresh fetches lists over the network and an upgrade unpacks and
# configures packages on an SD card: both may take long, and are killed only
# when they hang.
REFRESH_TIMEOUT = 600.0
QUERY_TIMEOUT = 120.0
UPGRADE_TIMEOUT = 3600.0

# apt-cache policy's words are translated; parse them in the C locale.
C_LOCALE = {"LC_ALL": "C"}
NONINTERACTIVE = {"DEBIAN_FRONTEND": "noninteractive"}


class UpdateFailed(Exception):
    """A step failed; the message says which and why."""


def detect(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """The package manager of this host ("apt", "dnf", "yum", "zypper"), or None."""
    for manager, program in MANAGERS:
        if which(program):
            return manager
    return None


def keep_back(packages: list[str], *, clients: list[str], with_at: bool) -> tuple[list[str], list[str]]:
    """(packages to consider, one message per package kept back and why)."""
    held: dict[str, str] = {}
    if clients:
        who = ", ".join(clients)
        held[SELF_PACKAGE] = (f"{len(clients)} client(s) connected ({who}): not upgrading {SELF_PACKAGE} "
                              f"now (it would restart the server); it is upgraded once no client is connected")
        held[SUPERVISOR_PACKAGE] = (f"{len(clients)} client(s) connected ({who}): not upgrading "
                                    f"{SUPERVISOR_PACKAGE} (its upgrade restarts every supervised service)")
    elif not with_at:
        held[SUPERVISOR_PACKAGE] = (f"at(1) not used: not upgrading {SUPERVISOR_PACKAGE} directly (its upgrade "
                                    f"restarts every supervised service, this update included); install at")
    keep = [p for p in packages if p not in held]
    notes = [held[p] for p in dict.fromkeys(packages) if p in held]
    return keep, notes


def parse_apt_policy(text: str) -> dict[str, tuple[str, str]]:
    """{package: (installed, candidate)} from `LC_ALL=C apt-cache policy PKGS`."""
    found: dict[str, tuple[str, str]] = {}
    name = None
    fields: dict[str, str] = {}
    for line in text.splitlines() + [""]:
        header = re.fullmatch(r"(\S+):", line)
        if header or not line.strip():
            if name and "Installed" in fields and "Candidate" in fields:
                found[name] = (fields["Installed"], fields["Candidate"])
            name, fields = (header.group(1), {}) if header else (None, {})
            continue
        m = re.fullmatch(r"\s+(Installed|Candidate):\s*(\S+)\s*", line)
        if m and name:
            fields[m.group(1)] = m.group(2)
    return found


def apt_upgradable(text: str) -> list[str]:
    """Installed packages whose candidate differs from the installed version."""
    return [name for name, (installed, candidate) in parse_apt_policy(text).items()
            if installed != "(none)" and candidate not in ("(none)", installed)]


def parse_dnf_check_update(text: str, packages: list[str]) -> list[str]:
    """Requested packages listed by `dnf/yum check-update` (exit status 100) as upgradable.

    Lines are `name.arch  version  repo`; a long name may sit on a line of its own.
    """
    wanted = set(packages)
    found = []
    for line in text.splitlines():
        words = line.split()
        if not words or "." not in words[0]:
            continue
        name = words[0].rsplit(".", 1)[0]
        if name in wanted and name not in found:
            found.append(name)
    return found


def parse_zypper_list_updates(text: str, packages: list[str]) -> list[str]:
    """Requested packages in `zypper list-updates`' table (column "Name")."""
    wanted = set(packages)
    column = None
    found = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 3:
            continue
        if column is None:
            if "Name" in cells:
                column = cells.index("Name")
            continue
        if column < len(cells) and cells[column] in wanted and cells[column] not in found:
            found.append(cells[column])
    return found


def refresh_argv(manager: str) -> tuple[str, ...]:
    return {"apt": commands.apt_refresh(), "dnf": commands.dnf_refresh("dnf"),
            "yum": commands.dnf_refresh("yum"), "zypper": commands.zypper_refresh()}[manager]


def query_argv(manager: str, packages: list[str]) -> tuple[str, ...]:
    return {"apt": commands.apt_policy(packages), "dnf": commands.dnf_check_update(packages, "dnf"),
            "yum": commands.dnf_check_update(packages, "yum"),
            "zypper": commands.zypper_list_updates()}[manager]


def upgrade_argv(manager: str, packages: list[str]) -> tuple[str, ...]:
    return {"apt": commands.apt_upgrade(packages), "dnf": commands.dnf_upgrade(packages, "dnf"),
            "yum": commands.dnf_upgrade(packages, "yum"), "zypper": commands.zypper_upgrade(packages)}[manager]


def upgradable(manager: str, result: Result, packages: list[str]) -> list[str]:
    """Which of `packages` the query says can be upgraded; UpdateFailed when it failed."""
    if manager in ("dnf", "yum"):
        # check-update: 100 = updates available, 0 = none, anything else = error.
        if result.rc == 0:
            return []
        if result.rc == 100:
            return parse_dnf_check_update(result.out, packages)
        raise UpdateFailed(result.summary())
    if not result.ok:
        raise UpdateFailed(result.summary())
    if manager == "apt":
        wanted = set(packages)
        return [p for p in apt_upgradable(result.out) if p in wanted]
    return parse_zypper_list_updates(result.out, packages)


def at_script(manager: str, packages: list[str]) -> str:
    """The job handed to at(1): the upgrade, with apt's non-interactive front end."""
    argv = upgrade_argv(manager, packages)
    if manager == "apt":
        argv = ("env", "DEBIAN_FRONTEND=noninteractive", *argv)
    return shlex.join(argv) + "\n"


def connected_clients(state_dir: str) -> list[str]:
    """Names of the clients connected to a server running on this host (from its state file)."""
    state = statefile.read(state_dir, "server") or {}
    clients = state.get("clients") or []
    return [str(c.get("name", "?")) if isinstance(c, dict) else str(c) for c in clients]


def use_at(setting: str, which: Callable[[str], str | None]) -> bool:
    if setting == "no":
        return False
    if setting == "yes" and not which("at"):
        raise UpdateFailed("[update] use_at = \"yes\" but at(1) is not installed; fix: apt-get install at, "
                           "or set use_at = \"auto\"")
    return bool(which("at"))


def run_update(cfg: Config, runner: Runner, *, dry_run: bool = False,
               echo: Callable[[str], None] = lambda line: None,
               which: Callable[[str], str | None] = shutil.which) -> bool:
    """Refresh, find and upgrade [update] packages; True when every step worked.

    With `dry_run` nothing changes: the refresh is skipped (the current lists
    are queried) and the upgrade is printed instead of queued or run.
    """
    manager = detect(which)
    if manager is None:
        raise UpdateFailed("no package manager found (looked for apt-get, dnf, yum, zypper)")
    with_at = use_at(cfg.update.use_at, which)
    clients = connected_clients(cfg.general.state_dir)
    packages, notes = keep_back(list(dict.fromkeys(cfg.update.packages)), clients=clients, with_at=with_at)
    for note in notes:
        log.info("update: %s", note)
    if not packages:
        log.info("update: nothing to check ([update] packages is empty)")
        return True
    ok = True
    refresh = refresh_argv(manager)
    if dry_run:
        echo(f"would refresh: {shlex.join(refresh)}")
    else:
        result = runner.run(refresh, timeout=REFRESH_TIMEOUT, env=NONINTERACTIVE)
        if not result.ok:
            # A mirror that cannot be reached leaves the others' lists fresh: go on with them.
            log.warning("update: refreshing the package lists failed: %s", result.summary())
            ok = False
    result = runner.run(query_argv(manager, packages), timeout=QUERY_TIMEOUT, env=C_LOCALE)
    found = upgradable(manager, result, packages)
    if not found:
        log.info("update: no upgrade found for %s", " ".join(packages))
        if dry_run:
            echo("nothing to upgrade")
        return ok
    log.info("update: upgradable: %s", " ".join(found))
    if with_at:
        script = at_script(manager, found)
        if dry_run:
            echo(f"would queue with {shlex.join(commands.at_in_one_minute())}: {script.strip()}")
            return ok
        queued = runner.run(commands.at_in_one_minute(), input=script)
        if not queued.ok:
            raise UpdateFailed(f"queueing the upgrade with at failed: {queued.summary()}")
        job = re.search(r"job (\d+) at (.*)", queued.err + queued.out)
        log.info("update: upgrade of %s queued with at%s", " ".join(found),
                 f" (job {job.group(1)}, {job.group(2).strip()})" if job else "")
        return ok
    argv = upgrade_argv(manager, found)
    if dry_run:
        echo(f"would run: {shlex.join(argv)}")
        return ok
    done = runner.run(argv, timeout=UPGRADE_TIMEOUT, env=NONINTERACTIVE)
    if not done.ok:
        raise UpdateFailed(f"upgrading {' '.join(found)} failed: {done.summary()}")
    log.info("update: upgraded %s", " ".join(found))
    return ok
