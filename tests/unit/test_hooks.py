"""Hooks: where they are looked for, what they get, and that they can never
stop a bring-up or tear-down. The last tests run real scripts (no root)."""

from __future__ import annotations

import logging

from pistop_mdns.executor import Runner
from pistop_mdns.hooks import Hooks, hook_paths
from tests.unit.board import Board, make_config

ENV = (("PISTOP_SERVER", "musicpi"), ("PISTOP_ADDRESS", "198.18.0.11"), ("PISTOP_REASON", "bring-up"))


def script(path, body: str, mode: int = 0o755):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


def test_hook_paths_expand_home_in_configured_order():
    assert hook_paths(["/etc/pistop-mdns/hooks", "~/.pistop", "~", "/etc/pistop-mdns/hooks"], "pre_mount",
                      "/home/pi") == ["/etc/pistop-mdns/hooks/pre_mount", "/home/pi/.pistop/pre_mount",
                                      "/home/pi/pre_mount"]
    assert hook_paths(["~/.pistop"], "post_unmount", None) == ["~/.pistop/post_unmount"]


def test_hooks_of_every_directory_run_in_order_with_the_server_described(tmp_path, monkeypatch):
    home = tmp_path / "home"
    system = tmp_path / "etc-hooks"
    script(system / "pre_mount", "")
    script(home / ".pistop" / "pre_mount", "")
    monkeypatch.setenv("HOME", str(home))
    cfg = make_config(tmp_path, hooks_dirs=[str(system), "~/.pistop"], hook_timeout=7)
    board = Board(tmp_path / "mountinfo")

    said = Hooks(cfg, board).run("pre_mount", ENV)

    assert board.calls == [(str(system / "pre_mount"),), (str(home / ".pistop" / "pre_mount"),)]
    assert board.timeouts == [7, 7]
    assert board.envs[0] == {**dict(ENV), "PISTOP_EVENT": "pre_mount"}
    assert said == f"ran {system / 'pre_mount'}, {home / '.pistop' / 'pre_mount'}"


def test_no_hooks_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", "/home/pi")
    cfg = make_config(tmp_path, hooks_dirs=[str(tmp_path / "none"), "~/.pistop"])
    assert Hooks(cfg, Board(tmp_path / "mountinfo")).run("post_mount", ENV) == \
        f"none in {tmp_path / 'none'}, /home/pi/.pistop"


def test_a_hook_that_is_not_executable_is_skipped_with_one_warning(tmp_path, caplog):
    hooks = tmp_path / "hooks"
    script(hooks / "pre_unmount", "", mode=0o644)
    cfg = make_config(tmp_path, hooks_dirs=[str(hooks)])
    board = Board(tmp_path / "mountinfo")
    runner = Hooks(cfg, board)

    runner.run("pre_unmount", ENV)
    runner.run("pre_unmount", ENV)

    assert board.calls == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"kitchen: hook {hooks / 'pre_unmount'} is not executable; skipped "
                        f"(fix: chmod +x {hooks / 'pre_unmount'})"]


def test_real_hooks_get_their_environment_and_failures_are_only_warnings(tmp_path, caplog):
    hooks = tmp_path / "hooks"
    seen = tmp_path / "seen"
    script(hooks / "post_mount", f'echo "$PISTOP_EVENT $PISTOP_SERVER $PISTOP_ADDRESS" > {seen}\n'
                                 'echo "no lcd here" >&2\nexit 3\n')
    cfg = make_config(tmp_path, hooks_dirs=[str(hooks)])

    said = Hooks(cfg, Runner(timeout=10)).run("post_mount", ENV)

    assert seen.read_text() == "post_mount musicpi 198.18.0.11\n"
    assert said == f"ran {hooks / 'post_mount'} (failed)"
    assert f"kitchen: hook {hooks / 'post_mount'} failed: {hooks / 'post_mount'}: exit 3: no lcd here; " \
           f"carrying on" in caplog.text


def test_a_hook_that_hangs_is_killed_after_hook_timeout(tmp_path, caplog):
    hooks = tmp_path / "hooks"
    script(hooks / "pre_mount", "sleep 60\n")
    cfg = make_config(tmp_path, hooks_dirs=[str(hooks)], hook_timeout=1)

    said = Hooks(cfg, Runner(timeout=30)).run("pre_mount", ENV)

    assert said.endswith("(failed)")
    assert "no answer, killed after the timeout" in caplog.text
