"""Service control: the exact systemctl/svc/svstat commands, svstat's words,
waiting for supervise, retries and the auto-detection. Nothing is run."""

from __future__ import annotations

import pytest

from pistop_mdns import services
from pistop_mdns.executor import Result
from pistop_mdns.services import Services, SvStatus, parse_svstat
from tests.unit.board import Board, Clock, make_config

MPD = "/service/mpd"


@pytest.fixture
def setup(tmp_path):
    board = Board(tmp_path / "mountinfo")
    clock = Clock()

    def make(marker: str | None = None, **general) -> Services:
        cfg = make_config(tmp_path, {"service_manager": "daemontools", **general})
        return Services(cfg, board, sleep=clock.sleep, clock=clock,
                        systemd_marker=marker or str(tmp_path / "no-systemd"))

    return make, board, clock


@pytest.mark.parametrize("out, expected", [
    ("/service/mpd: up (pid 8994) 1 seconds\n", SvStatus("up", 8994, "up (pid 8994) 1 seconds")),
    ("/service/mpd: up (pid 12) 300 seconds, normally down\n",
     SvStatus("up", 12, "up (pid 12) 300 seconds, normally down")),
    ("/service/mpd: up (pid 12) 3 seconds, want down\n", SvStatus("up", 12, "up (pid 12) 3 seconds, want down")),
    ("/service/mpd: down 1 seconds, normally up\n", SvStatus("down", None, "down 1 seconds, normally up")),
    ("/service/mpd: supervise not running\n", SvStatus("unsupervised", None, "supervise not running")),
    ("/service/mpd: unable to open supervise/ok: file does not exist\n",
     SvStatus("unsupervised", None, "unable to open supervise/ok: file does not exist")),
    ("", SvStatus("unsupervised", None, "no answer")),
])
def test_svstat_answers(out, expected):
    assert parse_svstat(out, MPD) == expected


def test_daemontools_start_waits_until_supervise_reports_up(setup):
    make, board, clock = setup
    board.svstat_script[MPD] = ["down 2 seconds, normally up", "down 2 seconds, normally up, want up",
                                "down 2 seconds, normally up, want up", "up (pid 42) 0 seconds"]

    outcome = make().start("mpd")

    assert outcome == services.Outcome(True, "svc -u /service/mpd: up (pid 42) 0 seconds")
    assert board.calls == [("svstat", MPD), ("svc", "-u", MPD), ("svstat", MPD), ("svstat", MPD), ("svstat", MPD)]
    assert clock.sleeps == [0.1, 0.1]
    assert board.timeouts == [5.0, 30, 5.0, 5.0, 5.0]


def test_daemontools_start_gives_up_when_the_service_never_comes_up(setup):
    make, board, clock = setup
    s = make()
    svstat_down = Result(("svstat", MPD), 0, out=f"{MPD}: down 0 seconds, normally up\n")
    board.answers[("svstat", MPD)] = svstat_down

    outcome = s.start("mpd")

    assert not outcome.ok
    assert outcome.detail == "svc -u /service/mpd: still down 0 seconds, normally up after 10 s"
    assert 10.0 <= sum(clock.sleeps) < 10.2, "bounded by services.STATE_WAIT"


def test_stopping_mpd_is_retried_then_given_up(setup):
    make, board, clock = setup
    board.services[MPD] = 9
    board.stubborn = {MPD}
    s = make(timeout=2)

    outcome = s.stop("mpd")

    assert not outcome.ok
    assert outcome.detail == ("svc -d /service/mpd: still up (pid 9) 12 seconds after 2 s "
                              "(gave up after 3 tries)")
    assert board.calls.count(("svc", "-d", MPD)) == 3


def test_stopping_a_stopped_mpd_is_fine(setup):
    make, board, _ = setup
    s = make()
    board.services[MPD] = None
    assert s.stop("mpd").ok
    board.unsupervised = {MPD}
    outcome = s.stop("mpd")
    assert outcome == services.Outcome(True, "/service/mpd: supervise not running, so mpd is not running")
    assert ("svc", "-d", MPD) not in board.calls[2:]


def test_starting_without_supervise_fails_with_the_fix(setup):
    make, board, _ = setup
    board.unsupervised = {MPD}
    outcome = make().start("mpd")
    assert outcome == services.Outcome(False, "/service/mpd: supervise not running; fix: start svscan "
                                              "(or supervise /service/mpd)")


def test_svc_warnings_are_failures_although_svc_exits_0(setup):
    make, board, _ = setup
    argv = ("svc", "-h", "/service/autofs")
    board.answers[argv] = Result(argv, 0, err="svc: warning: unable to control /service/autofs: file does not exist\n")
    outcome = make().reload("autofs")
    assert outcome == services.Outcome(False, "svc -h /service/autofs: unable to control /service/autofs: "
                                              "file does not exist")


def test_restart_waits_for_a_new_pid(setup):
    make, board, _ = setup
    board.services[MPD] = 7
    outcome = make().restart("mpd")
    assert outcome.ok
    assert board.calls == [("svstat", MPD), ("svc", "-t", MPD), ("svstat", MPD)]
    assert board.services[MPD] != 7


def test_systemd_commands(setup):
    make, board, _ = setup
    s = make(service_manager="systemd")
    assert s.start("mpd").ok
    assert s.restart("mpd").ok
    assert s.reload("autofs").ok
    assert s.stop("autofs").ok
    assert s.stop("mpd").ok
    assert s.is_running("mpd") is False
    assert board.calls == [
        ("systemctl", "start", "mpd.service"),
        ("systemctl", "restart", "mpd.service"),
        ("systemctl", "reload", "autofs.service"),
        ("systemctl", "stop", "autofs.service"),
        ("systemctl", "stop", "mpd.service", "mpd.socket"),
        ("systemctl", "is-active", "--quiet", "mpd.service"),
    ]
    assert all(t == 30 for t in board.timeouts), "every command has the configured timeout"


def test_systemd_stop_counts_an_inactive_mpd_even_without_mpd_socket(setup):
    make, board, _ = setup
    argv = ("systemctl", "stop", "mpd.service", "mpd.socket")
    board.answers[argv] = Result(argv, 5, err="Failed to stop mpd.socket: Unit mpd.socket not loaded.\n")
    outcome = make(service_manager="systemd").stop("mpd")
    assert outcome == services.Outcome(True, "systemctl stop mpd.service mpd.socket (mpd is inactive)")


def test_configured_unit_names(tmp_path):
    board = Board(tmp_path / "mountinfo")
    cfg = make_config(tmp_path, {"service_manager": "systemd"}, mpd_service="mpd-kitchen.service",
                      autofs_service="automount")
    s = Services(cfg, board)
    s.stop("mpd")
    s.start("autofs")
    assert board.calls[0] == ("systemctl", "stop", "mpd-kitchen.service", "mpd-kitchen.socket")
    assert board.calls[1] == ("systemctl", "start", "automount.service")


def test_auto_detection(setup, tmp_path):
    make, _, _ = setup
    systemd = tmp_path / "run-systemd-system"
    service_dir = tmp_path / "service"
    (service_dir / "mpd").mkdir(parents=True)
    s = make(service_manager="auto", service_dir=str(service_dir))
    assert s.backend("mpd") == "daemontools"
    assert s.backend("autofs") == "none"
    systemd.mkdir()
    s = make(marker=str(systemd), service_manager="auto", service_dir=str(service_dir))
    assert s.backend("mpd") == "systemd"
    assert s.backend("autofs") == "systemd"
    assert make(marker=str(systemd), service_manager="none").backend("mpd") == "none"


def test_no_service_manager_does_nothing_and_says_so(setup, tmp_path):
    make, board, _ = setup
    s = make(service_manager="auto", service_dir=str(tmp_path / "service"))
    outcome = s.start("mpd")
    assert outcome.ok and outcome.skipped
    assert outcome.detail == (f"cannot start mpd: no service manager found (no {tmp_path / 'no-systemd'}, no "
                              f"{tmp_path / 'service' / 'mpd'}); fix: set general.service_manager and "
                              f"general.service_dir; start it yourself")
    assert s.is_running("mpd") is None
    assert board.calls == []
