"""Read and minimally edit the system files pistop-mdns touches.

A music player is pointed at a new server by changing a handful of values:
the proxy database's `host`/`port` and `music_directory` in mpd.conf, and the
location of one entry in an autofs map. The server reads its exported paths
from /etc/exports. These files are also edited by people, so every edit here
changes only the value asked for and keeps every other byte (comments, order,
indentation, CRLF line endings, a missing final newline) exactly as it was;
when a file cannot be understood well enough to edit it safely, the caller
gets a `FileFormatError` naming the file, the line and a fix, and leaves the
file alone.

The text functions take the file's content as a string; their optional `path`
only names the file in error messages. `atomic_write` then puts the result in
place so that a crash or power cut never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

# Separators as mpd's tokenizer sees them; "\n" never occurs inside a line.
_SPACE = " \t\v\f\r"
_TOKEN = re.compile(r"[^ \t\v\f\r]+")
_MPD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class FileFormatError(ValueError):
    """A file cannot be read or safely edited; the message says where and how to fix it."""


def _error(path: str | os.PathLike | None, line: int, problem: str, fix: str) -> FileFormatError:
    where = f"line {line}" if path is None else f"{os.fspath(path)} line {line}"
    return FileFormatError(f"{where}: {problem}; fix: {fix}")


# --------------------------------------------------------------------- lines


@dataclass(frozen=True)
class _Line:
    number: int
    start: int  # offset of the line's first character in the whole text
    body: str  # without the line ending
    ending: str  # "\n", "\r\n", or "" on a last line without newline

    @property
    def end(self) -> int:
        return self.start + len(self.body) + len(self.ending)

    @property
    def indent(self) -> str:
        return self.body[: len(self.body) - len(self.body.lstrip(_SPACE))]

    @property
    def is_blank_or_comment(self) -> bool:
        rest = self.body.lstrip(_SPACE)
        return not rest or rest.startswith("#")


def _split_lines(text: str) -> list[_Line]:
    # Only "\n" ends a line, as for mpd, autofs and exportfs; str.splitlines()
    # would also split on form feeds and Unicode separators inside values.
    lines = []
    start = 0
    while start < len(text):
        newline = text.find("\n", start)
        end = len(text) if newline < 0 else newline + 1
        raw = text[start:end]
        if raw.endswith("\r\n"):
            body, ending = raw[:-2], "\r\n"
        elif raw.endswith("\n"):
            body, ending = raw[:-1], "\n"
        else:
            body, ending = raw, ""
        lines.append(_Line(len(lines) + 1, start, body, ending))
        start = end
    return lines


def _dominant_ending(text: str) -> str:
    crlf = text.count("\r\n")
    return "\r\n" if crlf > text.count("\n") - crlf else "\n"


def _apply(text: str, edits: list[tuple[int, int, str]], appended: list[str]) -> str:
    """Replace `text[start:end]` by each edit's string and add whole lines at the end.

    Returns `text` itself when there is nothing to do, so callers can tell
    "unchanged" by comparing. Insertions at the same offset keep their order.
    """
    if not edits and not appended:
        return text
    pieces = []
    done = 0
    for start, end, new in sorted(edits, key=lambda edit: edit[:2]):
        pieces += [text[done:start], new]
        done = end
    pieces.append(text[done:])
    if appended and text and not text.endswith("\n"):
        pieces.append(_dominant_ending(text))
    return "".join(pieces + appended)


def _reject_line_breaks(what: str, value: str) -> None:
    if any(char in value for char in "\n\r\0"):
        raise ValueError(f"{what} {value!r} contains a line break or NUL, which the file cannot hold")


# ------------------------------------------------------------------ mpd.conf


@dataclass(frozen=True)
class _Setting:
    line: _Line
    name: str
    value: str  # unquoted and unescaped
    value_start: int  # offsets of the value as written (quotes included) in the text
    value_end: int


@dataclass
class _Block:
    line: _Line | None  # the `name {` line; None for the settings outside any block
    name: str
    settings: list[_Setting] = field(default_factory=list)

    def first(self, name: str) -> _Setting | None:
        return next((s for s in self.settings if s.name == name), None)


@dataclass
class _MpdConf:
    top: _Block
    blocks: list[_Block]

    def database_blocks(self) -> list[_Block]:
        return [block for block in self.blocks if block.name == "database"]

    def proxy_block(self) -> _Block | None:
        for block in self.database_blocks():
            plugin = block.first("plugin")
            if plugin is not None and plugin.value == "proxy":
                return block
        return None


def _skip_space(body: str, i: int) -> int:
    while i < len(body) and body[i] in _SPACE:
        i += 1
    return i


def _parse_mpd_conf(text: str, path: str | os.PathLike | None) -> _MpdConf:
    # The whole file is checked, not just the lines asked about: mpd refuses
    # to start on any of these mistakes, and an edit next to text we do not
    # understand might land in the wrong place.
    top = _Block(None, "")
    blocks: list[_Block] = []
    block: _Block | None = None

    def fail(line: _Line, problem: str, fix: str) -> FileFormatError:
        return _error(path, line.number, problem, fix)

    def expect_end(line: _Line, i: int, after: str, fix: str) -> None:
        i = _skip_space(line.body, i)
        if i < len(line.body) and line.body[i] != "#":
            raise fail(line, f"unexpected text after {after}", fix)

    for line in _split_lines(text):
        body = line.body
        i = _skip_space(body, 0)
        if i == len(body) or body[i] == "#":
            continue
        if body[i] == "}":
            if block is None:
                raise fail(line, "'}' without an open block",
                           "remove the '}' or add the missing 'name {' line above it")
            expect_end(line, i + 1, "'}'", "put the text on its own line or start it with #")
            block = None
            continue
        match = _MPD_NAME.match(body, i)
        if match is None:
            raise fail(line, f"expected a setting name, found {body[i:]!r}",
                       "start the line with a setting name or comment it out with #")
        name = match.group()
        i = match.end()
        if i < len(body) and body[i] not in _SPACE:
            raise fail(line, f"expected a space after {name!r}",
                       f"put a space between {name!r} and the value or '{{'")
        i = _skip_space(body, i)
        if i == len(body) or body[i] == "#":
            raise fail(line, f"missing value for {name!r}", f'write {name} "value"')
        if body[i] == "{":
            if block is not None:
                raise fail(line, f"{name!r} block inside the {block.name!r} block of line "
                           f"{block.line.number}", f"close the {block.name!r} block with '}}' first")
            expect_end(line, i + 1, "'{'", "put the block's settings on their own lines")
            block = _Block(line, name)
            blocks.append(block)
            continue
        value_start = i
        if body[i] == '"':
            chars = []
            i += 1
            while i < len(body) and body[i] != '"':
                if body[i] == "\\":
                    i += 1
                    if i == len(body):
                        break
                chars.append(body[i])
                i += 1
            if i == len(body):
                raise fail(line, "unterminated quoted value", "close the quote")
            i += 1
            value = "".join(chars)
        else:
            while i < len(body) and body[i] not in _SPACE:
                if body[i] in "\"'":
                    raise fail(line, f"quote inside the unquoted value of {name!r}",
                               'put the whole value in double quotes, writing \\" for a quote')
                i += 1
            value = body[value_start:i]
        expect_end(line, i, f"the value of {name!r}", 'quote the whole value or start the comment with #')
        (block or top).settings.append(
            _Setting(line, name, value, line.start + value_start, line.start + i))
    if block is not None:
        raise fail(block.line, f"the {block.name!r} block is never closed",
                   "add a line with '}' after its settings")
    return _MpdConf(top, blocks)


def _mpd_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mpd_conf_value(text: str, name: str, *, path: str | os.PathLike | None = None) -> str | None:
    """The value of the first top-level (outside any block) setting `name`, or None."""
    setting = _parse_mpd_conf(text, path).top.first(name)
    return None if setting is None else setting.value


def mpd_proxy(text: str, *, path: str | os.PathLike | None = None) -> tuple[str | None, str | None] | None:
    """(host, port) of the first `database` block whose plugin is "proxy".

    None when there is no such block; a missing `host` or `port` line is None.
    """
    block = _parse_mpd_conf(text, path).proxy_block()
    if block is None:
        return None
    host, port = block.first("host"), block.first("port")
    return (None if host is None else host.value, None if port is None else port.value)


def mpd_databases(text: str, *, path: str | os.PathLike | None = None) -> list[tuple[int, str | None]]:
    """(line number, plugin or None) of every `database` block, in file order."""
    out = []
    for block in _parse_mpd_conf(text, path).database_blocks():
        plugin = block.first("plugin")
        out.append((block.line.number, None if plugin is None else plugin.value))
    return out


def rewrite_mpd_conf(
    text: str,
    *,
    proxy_host: str | None = None,
    proxy_port: int | None = None,
    music_directory: str | None = None,
    add_proxy_block: bool = False,
    drop_db_file: bool = False,
    path: str | os.PathLike | None = None,
) -> str:
    """Set the proxy database's host/port and `music_directory`, changing nothing else.

    Values are always written double-quoted. A missing host/port line goes
    right after the proxy block's `plugin` line; a missing `music_directory`
    and, with `add_proxy_block`, a missing proxy block are appended at the end.
    With `drop_db_file` too, adding the block also comments out every
    top-level `db_file` line (a `#` before its name): mpd refuses to start
    with both ("Found both 'database' and 'db_file' setting"), and Debian's
    own mpd.conf sets db_file.
    Returns `text` itself when every value already has the wanted value.
    """
    if proxy_host is not None:
        _reject_line_breaks("proxy host", proxy_host)
    if music_directory is not None:
        _reject_line_breaks("music_directory", music_directory)
    if proxy_port is not None and (
            isinstance(proxy_port, bool) or not isinstance(proxy_port, int)
            or not 1 <= proxy_port <= 65535):
        raise ValueError(f"proxy port {proxy_port!r} is not a port number from 1 to 65535")
    wanted = {"host": proxy_host, "port": None if proxy_port is None else str(proxy_port)}

    conf = _parse_mpd_conf(text, path)
    newline = _dominant_ending(text)
    edits: list[tuple[int, int, str]] = []
    appended: list[str] = []

    if music_directory is not None:
        setting = conf.top.first("music_directory")
        if setting is None:
            appended.append(f"music_directory {_mpd_quote(music_directory)}{newline}")
        elif setting.value != music_directory:
            edits.append((setting.value_start, setting.value_end, _mpd_quote(music_directory)))

    block = conf.proxy_block()
    if block is not None:
        plugin = block.first("plugin")
        for name, value in wanted.items():
            setting = block.first(name)
            if value is None or (setting is not None and setting.value == value):
                continue
            if setting is None:
                edits.append((plugin.line.end, plugin.line.end,
                              f"{plugin.line.indent}{name} {_mpd_quote(value)}{plugin.line.ending}"))
            else:
                edits.append((setting.value_start, setting.value_end, _mpd_quote(value)))
    elif add_proxy_block:
        other = conf.database_blocks()
        if other:
            raise _error(path, other[0].line.number,
                         "a database block with another plugin is already there and mpd "
                         "allows only one database",
                         "remove or comment out the other database block")
        lines = ["database {", '    plugin "proxy"']
        lines += [f"    {name} {_mpd_quote(value)}" for name, value in wanted.items() if value is not None]
        lines.append("}")
        appended += [line + newline for line in lines]
        if drop_db_file:
            starts = [s.line.start + len(s.line.indent) for s in conf.top.settings if s.name == "db_file"]
            edits += [(start, start, "#") for start in starts]

    return _apply(text, edits, appended)


# -------------------------------------------------------------------- autofs


@dataclass(frozen=True)
class _Entry:
    """One logical line: physical lines joined at trailing backslashes."""

    lines: tuple[_Line, ...]

    @property
    def number(self) -> int:
        return self.lines[0].number

    @property
    def continued(self) -> bool:
        return len(self.lines) > 1 or self.lines[-1].body.endswith("\\")

    @property
    def text(self) -> str:
        """The joined text; on the first line, offsets are those of the line itself."""
        return " ".join(line.body.removesuffix("\\") for line in self.lines)


def _entries(text: str) -> Iterator[_Entry]:
    """Logical lines that hold something; a comment line never continues."""
    pending: list[_Line] = []
    for line in _split_lines(text):
        if not pending and line.is_blank_or_comment:
            continue
        pending.append(line)
        if not line.body.endswith("\\"):
            yield from _nonblank(_Entry(tuple(pending)))
            pending = []
    if pending:
        yield from _nonblank(_Entry(tuple(pending)))


def _nonblank(entry: _Entry) -> Iterator[_Entry]:
    # A lone backslash can join a blank or comment line into an "entry".
    rest = entry.text.lstrip(_SPACE)
    if rest and not rest.startswith("#"):
        yield entry


def autofs_master_entries(text: str, *, path: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """(mount point, map file) of each entry of auto.master or an auto.master.d/*.autofs file.

    `+` includes and maps that are not files named by an absolute path
    (`-hosts`, `program:`, `yp:`, a bare map name) are skipped; a `file:` or
    `file,sun:` prefix is removed.
    """
    pairs = []
    for entry in _entries(text):
        words = _TOKEN.findall(entry.text)
        if words[0].startswith("+"):
            continue
        if len(words) < 2:
            raise _error(path, entry.number, f"mount point {words[0]!r} has no map",
                         "add the map file after the mount point, or comment the line out")
        mount_point, map_name = words[0], words[1]
        prefix = re.match(r"([a-z]+)(?:,[a-z]+)?:", map_name)
        if prefix is not None:
            if prefix.group(1) != "file":
                continue
            map_name = map_name[prefix.end():]
        if map_name.startswith("/"):
            pairs.append((mount_point, map_name))
    return pairs


@dataclass(frozen=True)
class _MapEntry:
    entry: _Entry
    options: str  # "" when absent, without the leading "-"
    location: str
    # offsets in the entry's text: [options_start, options_end) spans every
    # "-option" word (empty when there are none), the location runs from
    # location_start to location_end
    options_start: int
    options_end: int
    location_start: int
    location_end: int


def _find_map_entry(text: str, key: str, path: str | os.PathLike | None) -> _MapEntry | None:
    for entry in _entries(text):
        words = list(_TOKEN.finditer(entry.text))
        if words[0].group() != key:
            continue
        rest = words[1:]
        options = []
        while rest and rest[0].group().startswith("-"):
            options.append(rest.pop(0))
        if not rest:
            raise _error(path, entry.number, f"the entry {key!r} has no location",
                         "add the location (server:/path) at the end of the line")
        options_start = options[0].start() if options else rest[0].start()
        return _MapEntry(
            entry,
            ",".join(word.group()[1:] for word in options),
            entry.text[rest[0].start():rest[-1].end()],
            options_start,
            options[-1].end() if options else options_start,
            rest[0].start(),
            rest[-1].end(),
        )
    return None


def autofs_map_entry(text: str, key: str, *, path: str | os.PathLike | None = None) -> tuple[str, str] | None:
    """(options, location) of `key` in an autofs map, or None when the key is absent.

    Options come without the leading "-" ("" when there are none); several
    "-option" words are joined with commas. A location of several words (a
    multi-mount or replicated entry) is returned as written.
    """
    found = _find_map_entry(text, key, path)
    return None if found is None else (found.options, found.location)


# Put in front of an entry taken out of the map while its server cannot answer.
AUTOFS_OFF = "#pistop-mdns-off# "


def disable_autofs_entry(text: str, key: str, *, path: str | os.PathLike | None = None) -> str:
    """Comment out every entry for `key`, marked with AUTOFS_OFF (rewrite_autofs_map
    puts them back).

    automount reads a file map afresh on every lookup, so once the entries are
    out, a look into the mount point finds nothing to mount. Returns `text`
    itself when there is no such entry.
    """
    edits = []
    for entry in _entries(text):
        if _TOKEN.findall(entry.text)[0] != key:
            continue
        if entry.continued:
            raise _error(path, entry.number, f"the entry {key!r} continues over several lines",
                         "join it onto one line so it can be taken out and put back")
        edits.append((entry.lines[0].start, entry.lines[0].start, AUTOFS_OFF))
    return _apply(text, edits, [])


def _enable_autofs_entry(text: str, key: str) -> str:
    """Undo disable_autofs_entry for `key` (`text` itself when nothing was taken out)."""
    edits = []
    for line in _split_lines(text):
        rest = line.body.removeprefix(AUTOFS_OFF)
        if rest != line.body and _TOKEN.findall(rest)[:1] == [key]:
            edits.append((line.start, line.start + len(AUTOFS_OFF), ""))
    return _apply(text, edits, [])


def _reject_autofs_word(what: str, value: str) -> None:
    if not value or any(char.isspace() or char == "\0" for char in value):
        raise ValueError(f"autofs {what} {value!r} must be one word without spaces or line breaks")


def rewrite_autofs_map(text: str, key: str, *, location: str, options: str | None = None,
                       path: str | os.PathLike | None = None) -> str:
    """Point `key`'s entry at `location` and, unless `options` is None, set its options.

    `options` is written as "-options"; "" removes them. An entry taken out by
    disable_autofs_entry is put back first; a missing key is appended as
    `key -options location`. Returns `text` itself when nothing changes.
    """
    _reject_autofs_word("key", key)
    _reject_autofs_word("location", location)
    if options:
        _reject_autofs_word("options", options)
        if options.startswith("-"):
            raise ValueError(f"autofs options {options!r} must be given without the leading '-'")
    if key[0] in "#+":
        raise ValueError(f"autofs key {key!r} would be read as a comment or an include")
    # autofs would take these for options or a line continuation.
    if location.startswith("-") or location.endswith("\\"):
        raise ValueError(f"autofs location {location!r} cannot start with '-' or end with '\\'")

    text = _enable_autofs_entry(text, key)
    found = _find_map_entry(text, key, path)
    if found is None:
        words = [key, f"-{options}", location] if options else [key, location]
        return _apply(text, [], [" ".join(words) + _dominant_ending(text)])

    change_options = options is not None and options != found.options
    if found.location == location and not change_options:
        return text
    if found.entry.continued:
        raise _error(path, found.entry.number,
                     f"the entry {key!r} continues over several lines",
                     "join it onto one line so it can be rewritten")
    line_start = found.entry.lines[0].start
    edits = [(line_start + found.location_start, line_start + found.location_end, location)]
    if change_options:
        start = line_start + found.options_start
        if not options:
            # The separator after the options goes too, so the location
            # takes their place.
            edits.append((start, line_start + found.location_start, ""))
        elif found.options_start == found.options_end:
            edits.append((start, start, f"-{options} "))
        else:
            edits.append((start, line_start + found.options_end, f"-{options}"))
    return _apply(text, edits, [])


# ------------------------------------------------------------------- exports


def _export_words(entry: _Entry, path: str | os.PathLike | None) -> tuple[str, list[str]]:
    """The exported path and the client words of one exports(5) entry."""
    line = entry.text.lstrip(_SPACE)
    if not line.startswith('"'):
        words = _TOKEN.findall(line.partition("#")[0])
        return words[0], words[1:]
    close = line.find('"', 1)
    if close < 0:
        raise _error(path, entry.number, "unterminated quoted path", "close the quote")
    export, rest = line[1:close], line[close + 1:]
    if rest and rest[0] not in _SPACE + "#":
        raise _error(path, entry.number, f"unexpected text right after the path {export!r}",
                     "put a space between the path and the clients")
    return export, _TOKEN.findall(rest.partition("#")[0])


def exports_paths(text: str, *, path: str | os.PathLike | None = None) -> list[str]:
    """The exported paths of an exports(5) file, in file order (repeats kept)."""
    return [_export_words(entry, path)[0] for entry in _entries(text)]


def exports_fsid0(text: str, *, path: str | os.PathLike | None = None) -> str | None:
    """The path exported with fsid=0 (or fsid=root): the NFSv4 pseudo-root, or None.

    NFSv4 clients mount paths relative to it.
    """
    for entry in _entries(text):
        export, clients = _export_words(entry, path)
        for client in clients:
            if client.startswith("-"):
                options = client[1:]
            elif "(" in client:
                if not client.endswith(")"):
                    raise _error(path, entry.number, f"unclosed '(' in {client!r}",
                                 "end the option list with ')' and no space inside it")
                options = client[client.index("(") + 1:-1]
            else:
                continue
            if {"fsid=0", "fsid=root"} & {option.strip() for option in options.split(",")}:
                return export
    return None


# ------------------------------------------------------------- file access


def read_text(path: str | os.PathLike, *, encoding: str = "utf-8", setting: str | None = None) -> str:
    """The file's text with line endings as they are (CRLF stays CRLF).

    `setting` names the configuration key that points at this file, so the
    fix in the error message can mention it.
    """
    name = os.fspath(path)
    or_set = f" or set {setting}" if setting else ""
    try:
        with open(name, "rb") as file:
            data = file.read()
    except PermissionError as err:
        raise FileFormatError(f"cannot read {name}: {err.strerror}; fix: run as root{or_set}") from err
    except FileNotFoundError as err:
        raise FileFormatError(f"cannot read {name}: {err.strerror}; fix: create it{or_set}") from err
    except OSError as err:
        raise FileFormatError(f"cannot read {name}: {err.strerror}; fix: check the path{or_set}") from err
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise FileFormatError(f"cannot read {name}: line {line} is not valid {encoding}; "
                              f"fix: save the file as {encoding}") from err


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(path: str, data: bytes, like: os.stat_result | None) -> None:
    """Put `data` at `path` in one step, owned and moded like `like` (0644 when None)."""
    directory, name = os.path.split(path)
    directory = directory or "."
    fd, temporary = tempfile.mkstemp(dir=directory, prefix="." + name + ".")
    try:
        with os.fdopen(fd, "wb") as file:
            if like is not None and os.geteuid() == 0:
                os.fchown(file.fileno(), like.st_uid, like.st_gid)
            # After fchown, which clears set-id bits.
            os.fchmod(file.fileno(), 0o644 if like is None else stat.S_IMODE(like.st_mode))
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def atomic_copy(source: str | os.PathLike, target: str | os.PathLike) -> bool:
    """Make `target` a copy of `source`: its bytes, owner and mode, put in place atomically.

    Returns False, touching nothing, when the target already is such a copy.
    A symlink target is written through, so it stays a symlink.
    """
    target = os.path.realpath(target)
    with open(source, "rb") as file:
        data = file.read()
    like = os.stat(source)
    try:
        with open(target, "rb") as file:
            same = file.read() == data
        now = os.stat(target)
        if same and stat.S_IMODE(now.st_mode) == stat.S_IMODE(like.st_mode) \
                and (now.st_uid, now.st_gid) == (like.st_uid, like.st_gid):
            return False
    except FileNotFoundError:
        pass
    _replace(target, data, like)
    return True


def atomic_write(path: str | os.PathLike, text: str, *, backup_suffix: str | None = ".bak",
                 encoding: str = "utf-8") -> bool:
    """Replace the file's content with `text` so that it is never seen half-written.

    Returns False, touching nothing, when the file already holds exactly
    `text`. Otherwise keeps the previous content at `path + backup_suffix`
    (unless that is None), written the same careful way, and returns True.
    A symlink is written through, so it stays a symlink.
    """
    target = os.path.realpath(path)
    data = text.encode(encoding)
    try:
        with open(target, "rb") as file:
            old = file.read()
    except FileNotFoundError:
        old = None
    if old == data:
        return False
    like = None if old is None else os.stat(target)
    if old is not None and backup_suffix is not None:
        _replace(os.fspath(path) + backup_suffix, old, like)
    _replace(target, data, like)
    return True
