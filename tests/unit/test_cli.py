"""The command line as a user meets it: versions, help, exit statuses, config errors."""

from __future__ import annotations

import subprocess
import sys

from pistop_mdns import __version__
from tests.helpers import ENV


def pm(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pistop_mdns", *args], env=ENV, capture_output=True, text=True,
                          timeout=60, **kw)


def test_version_and_program_name():
    proc = pm("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"pistop-mdns, version {__version__}"
    assert pm("--help").stdout.startswith("Usage: pistop-mdns [OPTIONS] COMMAND [ARGS]...")


def test_config_error_exits_2_naming_file_key_and_fix(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[client]\npower_off = "yes"\n')
    proc = pm("--config", str(bad), "config", "check")
    assert proc.returncode == 2
    assert proc.stderr == (f"pistop-mdns: error: {bad}: [client] power_off: expected true or false, got 'yes' "
                           f"(string); fix: write power_off = true\n")


def test_bad_flag_value_exits_2():
    proc = pm("config", "show", "--port", "seventy")
    assert proc.returncode == 2
    assert "option --port: [server] port: expected an integer, got 'seventy'" in proc.stderr


def test_usage_error_exits_2():
    assert pm("browse", "--no-such-option").returncode == 2


def test_config_check_accepts_the_shipped_example():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "contrib" / "pistop-mdns.toml"
    proc = pm("--config", str(example), "config", "check")
    assert proc.returncode == 0 and proc.stdout == f"configuration ok ({example})\n"


def test_status_without_a_running_client_or_server_exits_2(tmp_path):
    proc = pm("status", "--state-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "no pistop-mdns client or server runs on this host" in proc.stdout


def test_envdir_values_show_their_file(tmp_path):
    (tmp_path / "variables").mkdir()
    (tmp_path / "variables" / "POWER_OFF").write_text("1\n")
    proc = pm("--envdir", str(tmp_path), "config", "show")
    assert proc.returncode == 0
    assert f"power_off = true  # {tmp_path}/variables/POWER_OFF" in proc.stdout
