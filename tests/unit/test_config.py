"""Configuration: sources, precedence, provenance, and error messages a user can act on."""

from __future__ import annotations

import tomllib

import pytest

from pistop_mdns import config
from pistop_mdns.config import ConfigError


def write(tmp_path, text, name="pistop-mdns.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_without_any_file(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_CONFIG", str(tmp_path / "absent.toml"))
    cfg = config.load()
    assert cfg.server.port == 5555
    assert cfg.client.mount_mode == "autofs"
    assert cfg.notify.lcd_port == 1806 and cfg.notify.notify_port == 1807
    assert cfg.backup.rsync_options == ["-alptgomHE", "--delete"]
    assert cfg.update.interval == 21600
    assert cfg.sources[("client", "mount_mode")] == "default"


def test_file_then_envdir_then_flags(tmp_path):
    path = write(tmp_path, '[client]\nmount_mode = "direct"\npower_off = false\nmountpoint = "/a"\n')
    env = tmp_path / "fclient" / "variables"
    env.mkdir(parents=True)
    (env / "POWER_OFF").write_text("1\n")
    (env / "MDRIVE").write_text("/var/lib/mpd/MDrive\n")
    (env / "HOST").write_text("192.168.1.1\n")  # fclient's server: a static server, with its PORT
    (env / "PORT").write_text("5556\n")
    (env / "MAXDAEMONS").write_text("10\n")  # tcpserver's: ignored
    cfg = config.load(path, str(tmp_path / "fclient"), {("client", "mountpoint"): "/flag"})
    assert cfg.client.static_servers == ["192.168.1.1:5556"]
    assert cfg.client.mount_mode == "direct"
    assert cfg.sources[("client", "mount_mode")] == path
    assert cfg.client.power_off is True
    assert cfg.sources[("client", "power_off")] == str(env / "POWER_OFF")
    assert cfg.client.mountpoint == "/flag"
    assert cfg.sources[("client", "mountpoint")] == "option --mountpoint"


def test_envdir_follows_envdir_rules(tmp_path):
    env = tmp_path / "variables"
    env.mkdir()
    (env / "POWER_OFF").write_text("")  # empty: unset, as envdir(8) does
    (env / "BACKUP").write_text("/etc/mpd.conf /home/pi/.pistop  \nsecond line ignored\n")
    (env / "INTERVAL").write_text("7200")
    (env / "LCD_PORT").write_text("1900\n")
    (env / "RSYNC_OPTIONS").write_text("-av --delete")
    cfg = config.load(write(tmp_path, ""), str(tmp_path))
    assert cfg.client.power_off is False and cfg.sources[("client", "power_off")] == "default"
    assert cfg.backup.paths == ["/etc/mpd.conf", "/home/pi/.pistop"]
    assert cfg.update.interval == 7200
    assert cfg.notify.lcd_port == 1900
    assert cfg.backup.rsync_options == ["-av", "--delete"]


def test_every_pistop_variable_maps_to_a_key():
    expected = {"MDRIVE", "POWER_OFF", "FORCE_UMOUNT", "BACKUP", "DEST", "RSYNC_OPTIONS", "UPGRADE", "INTERVAL",
                "LCD_HOST", "LCD_PORT", "LCD_FIFO", "NOTIFY_HOST", "NOTIFY_PORT", "NOTIFY_FIFO", "TIMEOUT",
                "HOST"}  # with PORT, see test_file_then_envdir_then_flags
    assert set(config.BY_ENVVAR) == expected


def test_wrong_type_names_file_key_expectation_and_fix(tmp_path):
    path = write(tmp_path, '[client]\npower_off = "yes"\n')
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert str(e.value) == (f"{path}: [client] power_off: expected true or false, got 'yes' (string); "
                            f"fix: write power_off = true")


def test_unknown_key_suggests_the_close_one(tmp_path):
    path = write(tmp_path, '[client]\nmount_mod = "direct"\n')
    with pytest.raises(ConfigError, match=r"\[client\] mount_mod: unknown key; did you mean mount_mode\? fix:"):
        config.load(path)


def test_unknown_section(tmp_path):
    path = write(tmp_path, '[clinet]\nserver = "x"\n')
    with pytest.raises(ConfigError, match=r"\[clinet\]: unknown section; did you mean client\?"):
        config.load(path)


def test_choice_and_range_errors(tmp_path):
    with pytest.raises(ConfigError, match="expected one of autofs, direct, mpd, got 'nfs'"):
        config.load(write(tmp_path, '[client]\nmount_mode = "nfs"\n'))
    with pytest.raises(ConfigError, match=r"\[server\] port: 70000 is out of range 1\.\.65535"):
        config.load(write(tmp_path, "[server]\nport = 70000\n"))


def test_bad_toml_and_unreadable_file(tmp_path):
    path = write(tmp_path, "[client\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid TOML: .*fix: correct the syntax"):
        config.load(path)
    with pytest.raises(ConfigError, match="no such file; fix: create it"):
        config.load(str(tmp_path / "missing.toml"))


def test_bad_envdir_value_names_the_file(tmp_path):
    (tmp_path / "LCD_PORT").write_text("abc")
    with pytest.raises(ConfigError, match=f"{tmp_path}/LCD_PORT: \\[notify\\] lcd_port: expected an integer"):
        config.load(write(tmp_path, "", "c.toml"), str(tmp_path))


def test_flag_values_are_converted_with_the_same_messages():
    with pytest.raises(ConfigError, match="option --dead-time: \\[client\\] dead_time: expected a number"):
        config.load("/dev/null", None, {("client", "dead_time"): "soon"})
    cfg = config.load("/dev/null", None, {("general", "interfaces"): "eth0,wlan0", ("client", "power_off"): True})
    assert cfg.general.interfaces == ["eth0", "wlan0"] and cfg.client.power_off is True


def test_show_is_valid_toml_and_says_where_each_value_came_from(tmp_path):
    path = write(tmp_path, '[client]\nmount_mode = "mpd"\n')
    text = config.show(config.load(path))
    assert f'mount_mode = "mpd"  # {path}' in text
    assert "port = 5555  # default" in text
    data = tomllib.loads(text)
    assert data["client"]["mount_mode"] == "mpd"


def test_example_lists_every_key_and_loads_back_to_the_defaults(tmp_path):
    text = config.example()
    for key in config.KEYS:
        assert f"#{key.name} = " in text
    uncommented = "\n".join(line[1:] if line.startswith("#") and " = " in line and "..." not in line else line
                            for line in text.splitlines())
    cfg = config.load(write(tmp_path, uncommented))
    for key in config.KEYS:
        if key.default is not None:
            assert cfg.values[(key.section, key.name)] == key.default


def test_server_pins_and_static_servers_take_one_name_or_a_list(tmp_path):
    cfg = config.load(write(tmp_path, '[client]\nserver = "musicpi"\nstatic_servers = "MusicPI"\n'), None)
    assert cfg.client.server == ["musicpi"] and cfg.client.static_servers == ["MusicPI"]
    cfg = config.load(write(tmp_path, '[client]\nserver = ["musicpi", "attic"]\n'
                                      'static_servers = ["MusicPI", "192.168.1.10:5555", "[fd00::1]:5555"]\n'), None)
    assert cfg.client.server == ["musicpi", "attic"]
    assert [config.endpoint(e) for e in cfg.client.static_servers] == [
        ("MusicPI", 5555), ("192.168.1.10", 5555), ("fd00::1", 5555)]
    cfg = config.load("/dev/null", None, {("client", "static_servers"): "MusicPI:5556,10.0.0.2"})
    assert cfg.client.static_servers == ["MusicPI:5556", "10.0.0.2"]


def test_a_static_server_that_is_no_address_is_refused_with_the_fix(tmp_path):
    for bad in ('"-oevil"', '"MusicPI:http"', '"a b"', '"host:70000"'):
        path = write(tmp_path, f"[client]\nstatic_servers = [{bad}]\n")
        with pytest.raises(config.ConfigError, match=r"\[client\] static_servers: .* is not HOST or HOST:PORT; "
                                                     r"fix: write e\.g\. static_servers"):
            config.load(path, None)
