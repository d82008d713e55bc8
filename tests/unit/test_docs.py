"""What users read stays true: the man page names every key and command, shows each command's
options and says which configuration flags it takes, exactly as the click definitions have them;
the shipped example configuration is the generated one, the README starts with the two commands."""

from __future__ import annotations

import re
from pathlib import Path

import click

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


# ---------------------------------------------------------------- each command's flags


def _plain(text: str) -> str:
    for escape, plain in (("\\-", "-"), ("\\fI", ""), ("\\fR", ""), ("\\fB", ""), ("\\fP", ""), ('\\(dq', '"')):
        text = text.replace(escape, plain)
    return text


def _commands() -> dict[str, click.Command]:
    """"server", ..., "config show": every command a user can type, by its words."""
    found = {}
    for name, command in cli.main.commands.items():
        if isinstance(command, click.Group):
            found.update({f"{name} {sub}": c for sub, c in command.commands.items()})
        else:
            found[name] = command
    return found


_HEADING = re.compile(r'^\.(?:B|BR|BI) (?:"([^"]+)"|(\S+))')


def _man_entries() -> dict[str, list[str]]:
    """Each command's entry in the man page: its heading line (the synopsis) first, then its text.

    An entry is a .TP whose tag starts with the command (in COMMANDS) or a .SS that does (in
    BACKUP, UPDATES AND SERVICES), up to the next .TP, .SS or .SH."""
    names = set(_commands())
    entries: dict[str, list[str]] = {}
    current = None
    section = ""
    lines = MAN.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(".SH "):
            section = line[4:].strip()
        if line.startswith((".SH", ".SS", ".TP")):
            current = None
        heading = None
        if section not in ("COMMANDS", "BACKUP, UPDATES AND SERVICES"):
            continue
        if line.startswith(".SS "):
            heading = _plain(line[4:]).split()[0]
        elif i and lines[i - 1] == ".TP" and (m := _HEADING.match(line)):
            heading = _plain(m.group(1) or m.group(2))
        if heading in names:
            assert heading not in entries, f"man/pistop-mdns.1 describes {heading} twice"
            current = heading
            entries[current] = [_plain(line)]
        elif current is not None:
            entries[current].append(_plain(line))
    return entries


def _words(text: str) -> list[str]:
    return [w for w in re.split(r",\s*|\s+and\s+", text.strip()) if w]


def _denoted(sentence: str) -> set[tuple[str, str]]:
    """The keys a "Configuration flags:" sentence names: "none", "every key of [a] and [b] but x and y",
    "[section] key, key and key", clauses joined by ";"."""
    if sentence == "none":
        return set()
    keys: set[tuple[str, str]] = set()
    for clause in sentence.split(";"):
        clause = clause.strip()
        every = re.fullmatch(r"every key of (.+?)(?: but (.+))?", clause)
        if every:
            but = set(_words(every.group(2) or ""))
            for section in re.findall(r"\[(\w+)\]", every.group(1)):
                keys |= {(section, k.name) for k in config.KEYS if k.section == section and k.name not in but}
            continue
        listed = re.fullmatch(r"\[(\w+)\] (.+)", clause)
        assert listed, f"cannot read {clause!r}"
        keys |= {(listed.group(1), name) for name in _words(listed.group(2))}
    unknown = keys - set(config.BY_NAME)
    assert not unknown, f"no such keys: {sorted(unknown)}"
    return keys


def _options(command: click.Command) -> tuple[set[str], set[tuple[str, str]], set[str]]:
    """(its own options, the configuration keys it takes as flags, every option word it accepts)."""
    own, keys, words = set(), set(), set()
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        words |= set(param.opts) | set(param.secondary_opts)
        if param.name.startswith("cfg__"):
            _, section, key = param.name.split("__", 2)
            keys.add((section, key))
        else:
            own |= {o for o in param.opts if o.startswith("--") and o != "--help"}
    return own, keys, words


def test_man_page_synopsis_of_each_command_shows_its_options_and_no_others():
    entries = _man_entries()
    assert set(entries) == set(_commands()), "fix: a .TP or .SS entry per command in man/pistop-mdns.1"
    for name, command in _commands().items():
        own, _, accepted = _options(command)
        synopsis = set(re.findall(r"--[a-z][a-z-]*", entries[name][0]))
        assert own <= synopsis, f"man page: {name}'s synopsis lacks {sorted(own - synopsis)}"
        assert synopsis <= accepted, f"man page: {name} has no {sorted(synopsis - accepted)}"


def test_man_page_says_which_configuration_flags_each_command_takes():
    entries = _man_entries()
    for name, command in _commands().items():
        sentences = [m.group(1) for line in entries[name] if (m := re.fullmatch(r"Configuration flags: (.*)\.", line))]
        assert len(sentences) == 1, f"man page: {name} needs one line 'Configuration flags: ....'"
        _, keys, _ = _options(command)
        said = _denoted(sentences[0])
        assert said == keys, (f"man page: {name}: the page names {sorted(said - keys)} that it does not take "
                              f"and leaves out {sorted(keys - said)}")


def test_the_sentence_reader_reads_every_form():
    assert _denoted("none") == set()
    assert _denoted("[general] state_dir") == {("general", "state_dir")}
    assert _denoted("every key of [backup] but dest and paths; [general] hostname, timeout and state_dir") == {
        ("backup", "rsync_options"), ("general", "hostname"), ("general", "timeout"), ("general", "state_dir")}
