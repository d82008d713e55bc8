"""What users read stays true: the man page names every key and command, the shipped
example configuration is the generated one, the README starts with the two commands."""

from __future__ import annotations

import re
from pathlib import Path

from pistop_mdns import cli, config

ROOT = Path(__file__).resolve().parents[2]
MAN = (ROOT / "man" / "pistop-mdns.1").read_text()
README = (ROOT / "README.md").read_text()


def test_man_page_documents_every_configuration_key():
    plain = MAN.replace("\\-", "-")
    missing = [f"[{k.section}] {k.name}" for k in config.KEYS if not re.search(rf"\.BR {k.name} \"", plain)]
    assert not missing, f"man/pistop-mdns.1 lacks {missing}"


def test_man_page_documents_every_command():
    plain = MAN.replace("\\-", "-")
    missing = [name for name in cli.main.commands if name not in plain]
    assert not missing


def test_shipped_example_configuration_is_the_generated_one():
    assert (ROOT / "contrib" / "pistop-mdns.toml").read_text() == config.example() + "\n", \
        "fix: pistop-mdns config example > contrib/pistop-mdns.toml"


def test_readme_starts_with_the_demo_and_test_commands_and_ci_runs_the_latter():
    first_block = README.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert first_block[0].startswith("sudo tools/demo ")
    assert first_block[1].startswith("sudo tools/test ")
    assert "tools/test" in (ROOT / ".ci" / "run").read_text()
