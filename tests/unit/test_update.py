"""Update decisions (pure) and the command sequence of run_update with a recording runner."""

from __future__ import annotations

import logging
import os

import pytest

from pistop_mdns import config, statefile, update
from pistop_mdns.executor import Result

APT_POLICY = """\
pistop-mdns:
  Installed: 0.1.0
  Candidate: 0.2.0
  Version table:
     0.2.0 500
        500 http://deb.example.org bookworm/main arm64 Packages
 *** 0.1.0 100
        100 /var/lib/dpkg/status
mpd:
  Installed: 0.23.12-1
  Candidate: 0.23.12-1
  Version table:
 *** 0.23.12-1 500
        500 http://deb.debian.org/debian bookworm/main arm64 Packages
        100 /var/lib/dpkg/status
raspotify:
  Installed: (none)
  Candidate: 0.44.1
  Version table:
     0.44.1 500
        500 https://dtcooper.github.io/raspotify raspotify/main arm64 Packages
daemontools:
  Installed: 1:0.76-8.1
  Candidate: 1:0.76-9
  Version table:
     1:0.76-9 500
        500 http://deb.debian.org/debian bookworm/main arm64 Packages
 *** 1:0.76-8.1 100
        100 /var/lib/dpkg/status
upmpdcli:
  Installed: 1.8.3
  Candidate: (none)
  Version table:
 *** 1.8.3 100
        100 /var/lib/dpkg/status
"""

DNF_CHECK_UPDATE = """\

mpd.aarch64                     0.23.15-1.fc39           updates
a-package-with-a-very-long-name-indeed.noarch
                                2.0-1.fc39               updates
pistop-mdns.noarch              0.2.0-1                  home_mbhangui
Obsoleting Packages
daemontools.aarch64             0.76-30.fc39             updates
"""

ZYPPER_LIST_UPDATES = """\
Loading repository data...
Reading installed packages...
S | Repository | Name        | Current Version | Available Version | Arch
--+------------+-------------+-----------------+-------------------+-------
v | repo-oss   | mpd         | 0.23.14-1.1     | 0.23.15-1.1       | x86_64
v | home_pi    | pistop-mdns | 0.1.0-1.1       | 0.2.0-1.1         | noarch
v | repo-oss   | vim         | 9.1-1.1         | 9.1-2.1           | x86_64
"""


def make_cfg(**values) -> config.Config:
    flags = {tuple(k.split("__")): v for k, v in values.items()}
    return config.load("/dev/null", None, flags)


def which_of(*programs: str):
    return lambda name: f"/usr/bin/{name}" if name in programs else None


class ScriptedRunner:
    """Records every call; answers from a table keyed by the program name."""

    def __init__(self, answers: dict[str, Result | None] | None = None):
        self.calls: list[tuple[tuple[str, ...], dict]] = []
        self.answers = answers or {}

    def run(self, argv, *, timeout=None, input=None, env=None) -> Result:
        argv = tuple(argv)
        self.calls.append((argv, {"input": input, "env": env, "timeout": timeout}))
        answer = self.answers.get(argv[0])
        if answer is None:
            return Result(argv, 0)
        return Result(argv, answer.rc, answer.out, answer.err)


def ok(out: str = "", err: str = "", rc: int = 0) -> Result:
    return Result((), rc, out, err)


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize("present, expected", [
    (("apt-get", "dnf"), "apt"),
    (("dnf", "yum"), "dnf"),
    (("yum",), "yum"),
    (("zypper",), "zypper"),
    ((), None),
])
def test_detect_prefers_apt_then_dnf_yum_zypper(present, expected):
    assert update.detect(which_of(*present)) == expected


def test_connected_clients_keep_back_pistop_mdns_and_daemontools_and_say_so():
    keep, notes = update.keep_back(["mpd", "pistop-mdns", "daemontools"], clients=["kitchen"], with_at=True)
    assert keep == ["mpd"]
    assert len(notes) == 2 and "1 client(s) connected (kitchen): not upgrading pistop-mdns" in notes[0]


def test_without_at_daemontools_is_kept_back():
    keep, notes = update.keep_back(["mpd", "daemontools", "pistop-mdns"], clients=[], with_at=False)
    assert keep == ["mpd", "pistop-mdns"] and "not upgrading daemontools" in notes[0]


def test_nothing_kept_back_with_at_and_no_clients():
    assert update.keep_back(["mpd", "pistop-mdns"], clients=[], with_at=True) == (["mpd", "pistop-mdns"], [])


def test_apt_policy_counts_only_installed_packages_with_a_newer_candidate():
    assert update.parse_apt_policy(APT_POLICY)["raspotify"] == ("(none)", "0.44.1")
    assert update.apt_upgradable(APT_POLICY) == ["pistop-mdns", "daemontools"]


def test_dnf_check_update_lists_requested_packages_also_on_wrapped_lines():
    found = update.parse_dnf_check_update(
        DNF_CHECK_UPDATE, ["mpd", "a-package-with-a-very-long-name-indeed", "daemontools", "raspotify"])
    assert found == ["mpd", "a-package-with-a-very-long-name-indeed", "daemontools"]


def test_zypper_list_updates_is_read_by_its_name_column():
    assert update.parse_zypper_list_updates(ZYPPER_LIST_UPDATES, ["mpd", "pistop-mdns", "raspotify"]) == [
        "mpd", "pistop-mdns"]


@pytest.mark.parametrize("rc, expected", [(0, []), (100, ["mpd"])])
def test_dnf_exit_status_100_means_updates(rc, expected):
    assert update.upgradable("dnf", ok(DNF_CHECK_UPDATE, rc=rc), ["mpd"]) == expected


def test_a_failed_query_is_an_error():
    with pytest.raises(update.UpdateFailed, match="exit 1"):
        update.upgradable("dnf", Result(("dnf",), 1, err="Error: cannot download repomd.xml"), ["mpd"])
    with pytest.raises(update.UpdateFailed):
        update.upgradable("apt", Result(("apt-cache",), 100, err="E: broken"), ["mpd"])


def test_command_lines_for_each_manager():
    pk = ["mpd", "pistop-mdns"]
    assert update.refresh_argv("apt") == ("apt-get", "-qy", "update")
    assert update.query_argv("apt", pk) == ("apt-cache", "policy", "mpd", "pistop-mdns")
    assert update.upgrade_argv("apt", pk) == (
        "apt-get", "-qy", "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
        "--only-upgrade", "install", "mpd", "pistop-mdns")
    assert update.refresh_argv("dnf") == ("dnf", "-q", "makecache")
    assert update.query_argv("dnf", pk) == ("dnf", "-q", "check-update", "mpd", "pistop-mdns")
    assert update.upgrade_argv("dnf", pk) == ("dnf", "-y", "upgrade", "mpd", "pistop-mdns")
    assert update.refresh_argv("yum") == ("yum", "-q", "makecache")
    assert update.upgrade_argv("yum", pk) == ("yum", "-y", "update", "mpd", "pistop-mdns")
    assert update.refresh_argv("zypper") == ("zypper", "--non-interactive", "refresh")
    assert update.query_argv("zypper", pk) == ("zypper", "--non-interactive", "list-updates")
    assert update.upgrade_argv("zypper", pk) == ("zypper", "--non-interactive", "update", "mpd", "pistop-mdns")


def test_the_at_job_is_the_upgrade_with_a_noninteractive_front_end():
    assert update.at_script("apt", ["mpd", "raspotify"]) == (
        "env DEBIAN_FRONTEND=noninteractive apt-get -qy -o Dpkg::Options::=--force-confdef "
        "-o Dpkg::Options::=--force-confold --only-upgrade install mpd raspotify\n")
    assert update.at_script("zypper", ["mpd"]) == "zypper --non-interactive update mpd\n"


def test_use_at_yes_without_at_is_an_error_naming_the_key():
    with pytest.raises(update.UpdateFailed, match=r"use_at = \"yes\""):
        update.use_at("yes", which_of("apt-get"))
    assert update.use_at("auto", which_of("at")) is True
    assert update.use_at("no", which_of("at")) is False


# ---------------------------------------------------------------- run_update


def test_apt_refresh_query_and_queue_with_at(tmp_path, caplog):
    cfg = make_cfg(update__packages=["pistop-mdns", "mpd", "daemontools", "raspotify"],
                   general__state_dir=str(tmp_path))
    runner = ScriptedRunner({"apt-cache": ok(APT_POLICY), "at": ok(err="job 7 at Tue Nov 24 10:01:00 2026\n")})
    with caplog.at_level(logging.INFO):
        assert update.run_update(cfg, runner, which=which_of("apt-get", "at")) is True
    argvs = [c[0] for c in runner.calls]
    assert argvs == [
        ("apt-get", "-qy", "update"),
        ("apt-cache", "policy", "pistop-mdns", "mpd", "daemontools", "raspotify"),
        ("at", "now", "+", "1", "minute"),
    ]
    assert runner.calls[0][1]["env"] == {"DEBIAN_FRONTEND": "noninteractive"}
    assert runner.calls[1][1]["env"] == {"LC_ALL": "C"}
    assert runner.calls[2][1]["input"] == update.at_script("apt", ["pistop-mdns", "daemontools"])
    assert "queued with at (job 7" in caplog.text


def test_a_server_with_clients_does_not_upgrade_itself(tmp_path, caplog):
    statefile.write(str(tmp_path), "server", {"clients": [{"name": "kitchen"}, {"name": "bedroom"}]})
    cfg = make_cfg(update__packages=["pistop-mdns", "mpd"], general__state_dir=str(tmp_path))
    runner = ScriptedRunner({"apt-cache": ok(APT_POLICY)})
    with caplog.at_level(logging.INFO):
        assert update.run_update(cfg, runner, which=which_of("apt-get", "at")) is True
    assert runner.calls[1][0] == ("apt-cache", "policy", "mpd")
    assert len(runner.calls) == 2  # mpd is up to date: nothing queued
    assert "2 client(s) connected (kitchen, bedroom): not upgrading pistop-mdns" in caplog.text


def test_a_stale_server_state_file_does_not_count(tmp_path):
    statefile.write(str(tmp_path), "server", {"clients": [{"name": "kitchen"}]})
    data = (tmp_path / "server.json").read_text().replace(f'"pid": {os.getpid()}', '"pid": 999999999')
    (tmp_path / "server.json").write_text(data)
    assert update.connected_clients(str(tmp_path)) == []


def test_without_at_the_upgrade_runs_directly(tmp_path):
    cfg = make_cfg(update__packages=["pistop-mdns"], general__state_dir=str(tmp_path))
    runner = ScriptedRunner({"apt-cache": ok(APT_POLICY)})
    assert update.run_update(cfg, runner, which=which_of("apt-get")) is True
    argv, kw = runner.calls[-1]
    assert argv == update.upgrade_argv("apt", ["pistop-mdns"])
    assert kw["env"] == {"DEBIAN_FRONTEND": "noninteractive"} and kw["timeout"] == update.UPGRADE_TIMEOUT


def test_a_failed_upgrade_raises_with_the_reason(tmp_path):
    cfg = make_cfg(update__packages=["pistop-mdns"], general__state_dir=str(tmp_path), update__use_at="no")
    runner = ScriptedRunner({"apt-cache": ok(APT_POLICY),
                             "apt-get": ok(err="E: Could not get lock /var/lib/dpkg/lock-frontend", rc=100)})
    with pytest.raises(update.UpdateFailed, match="lock-frontend"):
        update.run_update(cfg, runner, which=which_of("apt-get", "at"))


def test_a_failed_refresh_is_reported_but_the_check_goes_on(tmp_path):
    cfg = make_cfg(update__packages=["mpd"], general__state_dir=str(tmp_path))
    runner = ScriptedRunner({"apt-get": ok(err="W: Failed to fetch", rc=100), "apt-cache": ok(APT_POLICY)})
    assert update.run_update(cfg, runner, which=which_of("apt-get", "at")) is False
    assert [c[0][0] for c in runner.calls] == ["apt-get", "apt-cache"]


def test_dry_run_queries_but_neither_refreshes_nor_upgrades(tmp_path):
    cfg = make_cfg(update__packages=["pistop-mdns", "mpd"], general__state_dir=str(tmp_path))
    printed: list[str] = []
    runner = ScriptedRunner({"apt-cache": ok(APT_POLICY)})
    assert update.run_update(cfg, runner, dry_run=True, echo=printed.append, which=which_of("apt-get", "at"))
    assert [c[0][0] for c in runner.calls] == ["apt-cache"]
    assert printed == [
        "would refresh: apt-get -qy update",
        "would queue with at now + 1 minute: env DEBIAN_FRONTEND=noninteractive apt-get -qy -o "
        "Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold --only-upgrade install pistop-mdns",
    ]


def test_no_package_manager_is_an_error():
    with pytest.raises(update.UpdateFailed, match="no package manager found"):
        update.run_update(make_cfg(), ScriptedRunner(), which=which_of())
