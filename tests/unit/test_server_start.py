"""What the server does at start besides advertising: pistop's fserver backed up on every start."""

from __future__ import annotations

import pytest

from pistop_mdns import config
from pistop_mdns.actions.server import backup_at_start


def load(tmp_path, toml: str = "", **variables: str) -> config.Config:
    path = tmp_path / "pistop-mdns.toml"
    path.write_text(toml)
    envdir = tmp_path / "variables"
    envdir.mkdir(exist_ok=True)
    for name, value in variables.items():
        (envdir / name).write_text(value + "\n")
    return config.load(str(path), str(envdir))


def test_backup_paths_set_in_pistops_variables_are_backed_up_at_start_as_fserver_did(tmp_path):
    assert backup_at_start(load(tmp_path, BACKUP="/etc/mpd.conf /etc/exports", DEST="/MDrive")) == (True, None)


def test_backup_at_start_false_turns_it_off(tmp_path):
    cfg = load(tmp_path, "[server]\nbackup_at_start = false\n", BACKUP="/etc/mpd.conf")
    assert backup_at_start(cfg) == (False, None)


def test_nothing_to_back_up_is_silent_unless_backup_at_start_was_asked_for(tmp_path):
    assert backup_at_start(load(tmp_path)) == (False, None)
    path = tmp_path / "pistop-mdns.toml"
    cfg = load(tmp_path, "[server]\nbackup_at_start = true\n")
    assert backup_at_start(cfg) == (False, f"backup_at_start is true ({path}) but [backup] paths is empty: "
                                           "nothing to back up")


@pytest.mark.parametrize("value", ["true", "false"])
def test_config_show_tells_a_default_from_an_explicit_setting(tmp_path, value):
    shown = config.show(load(tmp_path, f"[server]\nbackup_at_start = {value}\n"))
    assert f"backup_at_start = {value}  # {tmp_path}/pistop-mdns.toml" in shown
    (tmp_path / "unset").mkdir()
    assert "backup_at_start = true  # default" in config.show(load(tmp_path / "unset"))
