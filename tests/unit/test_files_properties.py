"""Properties of the mpd.conf and autofs map rewriters on generated files.

The generators build each file from known pieces (indentation, name,
separator, value token, tail, line ending) and remember where every line sits,
so the test can compute the exact expected output on its own: every line is
equal to the input except the one line per requested value, where only the
value token differs, plus lines inserted after the proxy `plugin` line or
appended at the end for values that had no line.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pistop_mdns.files import (
    FileFormatError,
    autofs_map_entry,
    disable_autofs_entry,
    mpd_conf_value,
    mpd_proxy,
    rewrite_autofs_map,
    rewrite_mpd_conf,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SPACE = st.text(alphabet=" \t", max_size=3)
SOME_SPACE = st.text(alphabet=" \t\f", min_size=1, max_size=3)
# Any text a line can hold; st.text() already leaves out surrogates.
LINE_TEXT = st.text(max_size=10).map(lambda s: "".join(c for c in s if c not in "\r\n"))
VALUE = st.one_of(
    LINE_TEXT.map(lambda s: s.replace("\0", "")),
    st.text(alphabet='ab"\\#{} é/:', max_size=8),
)
UNQUOTED = st.text(alphabet="abz09/._-:é", min_size=1, max_size=4).flatmap(
    lambda head: st.text(alphabet="abz09/._-:é#{}", max_size=4).map(lambda tail: head + tail))


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Line:
    body: str
    ending: str = "\n"
    block: int | None = None  # index of the enclosing block, None at top level
    name: str | None = None  # set on setting lines
    value: str | None = None
    token_start: int = 0  # where the value token sits in body
    token_end: int = 0

    def with_value_token(self, token: str) -> str:
        return self.body[:self.token_start] + token + self.body[self.token_end:]


@dataclass(frozen=True)
class Conf:
    lines: list[Line]
    blocks: list[tuple[str, int]]  # (name, index of the opening line)
    error_line: int | None  # 1-based line number of an injected mistake
    error_text: str | None

    @property
    def text(self) -> str:
        return "".join(line.body + line.ending for line in self.lines)


def can_be_unquoted(value: str) -> bool:
    return bool(value) and value[0] not in "#{" and not any(c in " \t\v\f\r\"'" for c in value)


@st.composite
def setting_lines(draw, names):
    indent = draw(SPACE)
    name = draw(st.sampled_from(names))
    special = {"plugin": ["proxy", "proxy", "proxy", "simple"], "host": ["pi4", "198.18.0.11"],
               "port": ["6600", "6601"], "music_directory": ["/srv/music"]}
    if name == "plugin" and draw(st.integers(0, 3)):
        value = draw(st.sampled_from(special["plugin"]))
    else:
        value = draw(st.one_of(VALUE, UNQUOTED, st.sampled_from(special.get(name, ["x"]))))
    if draw(st.booleans()) and can_be_unquoted(value):
        token = value
    elif draw(st.booleans()):
        # mpd unescapes any backslashed character, not only \" and \\.
        token = '"' + "".join("\\" + c for c in value) + '"'
    else:
        token = quote(value)
    head = indent + name + draw(SOME_SPACE)
    tail = draw(st.sampled_from(["", "space", "comment", "tight"]))
    if tail == "space":
        tail = draw(SOME_SPACE)
    elif tail == "comment" or (tail == "tight" and not token.startswith('"')):
        tail = draw(SOME_SPACE) + "#" + draw(LINE_TEXT)
    elif tail == "tight":
        tail = "#" + draw(LINE_TEXT)
    return Line(head + token + tail, name=name, value=value,
                token_start=len(head), token_end=len(head) + len(token))


def other_line(draw):
    if draw(st.booleans()):
        return Line(draw(SPACE))
    return Line(draw(SPACE) + "#" + draw(LINE_TEXT))


def comment_tail(draw):
    return draw(st.sampled_from(["", draw(SPACE), draw(SPACE) + "#" + draw(LINE_TEXT)]))


TOP_NAMES = ["music_directory", "port", "host", "user", "bind_to_address", "plugin", "db_file"]
BLOCK_NAMES = ["plugin", "plugin", "host", "port", "type", "music_directory", "name"]


@st.composite
def mpd_confs(draw):
    """An mpd.conf-like text, possibly with one injected mistake."""
    items: list[list[Line]] = []
    blocks: list[tuple[str, int]] = []
    position = 0
    for kind in draw(st.lists(st.sampled_from(["other", "setting", "block"]), max_size=12)):
        if kind == "other":
            item = [other_line(draw)]
        elif kind == "setting":
            item = [draw(setting_lines(TOP_NAMES))]
        else:
            name = draw(st.sampled_from(["database", "database", "database", "audio_output", "input"]))
            number = len(blocks)
            blocks.append((name, position))
            item = [Line(draw(SPACE) + name + draw(SOME_SPACE) + "{" + comment_tail(draw))]
            # Database blocks mostly hold the lines the rewrite looks for.
            inner_names = ["plugin", "plugin", "host", "port"] if name == "database" else []
            for inner in draw(st.lists(st.sampled_from(["other", "setting"] + inner_names), max_size=6)):
                if inner == "other":
                    line = other_line(draw)
                else:
                    line = draw(setting_lines([inner] if inner in inner_names else BLOCK_NAMES))
                item.append(replace(line, block=number))
            item.append(Line(draw(SPACE) + "}" + comment_tail(draw), block=number))
        items.append(item)
        position += len(item)

    error_line = error_text = None
    mistake = draw(st.sampled_from([None] * 6 + ["unterminated", "stray", "unclosed", "nested"]))
    if mistake == "unterminated":
        at = draw(st.integers(0, position))
        bad = Line(draw(SPACE) + 'name "' + draw(st.text(alphabet='ab \\é#{}', max_size=5)))
        flat = [line for item in items for line in item]
        items = [flat[:at] + [bad] + flat[at:]]
        error_line, error_text = at + 1, "unterminated quoted value; fix: close the quote"
    elif mistake == "stray":
        at = draw(st.integers(0, len(items)))
        items.insert(at, [Line(draw(SPACE) + "}")])
        error_line = sum(len(item) for item in items[:at]) + 1
        error_text = "'}' without an open block"
    elif mistake == "unclosed":
        items.append([Line("audio_output {")])
        error_line, error_text = position + 1, "the 'audio_output' block is never closed"
    elif mistake == "nested" and blocks:
        _, opening = blocks[draw(st.integers(0, len(blocks) - 1))]
        flat = [line for item in items for line in item]
        items = [flat[:opening + 1] + [Line(draw(SPACE) + "input {")] + flat[opening + 1:]]
        error_line, error_text = opening + 2, "'input' block inside the"

    lines = [line for item in items for line in item]
    endings = draw(st.sampled_from([["\n"], ["\r\n"], ["\n", "\r\n"]]))
    lines = [replace(line, ending=draw(st.sampled_from(endings))) for line in lines]
    # An empty last line without its ending would be no line at all.
    if lines and lines[-1].body and draw(st.booleans()):
        lines[-1] = replace(lines[-1], ending="")
    return Conf(lines, blocks, error_line, error_text)


def dominant(lines: list[Line]) -> str:
    crlf = sum(line.ending == "\r\n" for line in lines)
    return "\r\n" if crlf > sum(line.ending == "\n" for line in lines) else "\n"


def first(lines: list[Line], name: str, block: int | None) -> int | None:
    return next((i for i, line in enumerate(lines) if line.block == block and line.name == name), None)


def proxy_block(conf: Conf) -> int | None:
    for number, (name, _) in enumerate(conf.blocks):
        plugin = first(conf.lines, "plugin", number)
        if name == "database" and plugin is not None and conf.lines[plugin].value == "proxy":
            return number
    return None


def expected_mpd_conf(conf: Conf, host, port, music_directory, add_proxy_block):
    """The rewritten text, or the line number of the other database block to refuse."""
    lines = conf.lines
    out = [line.body + line.ending for line in lines]
    after = [[] for _ in lines]  # lines inserted after each input line
    appended = []
    newline = dominant(lines)

    def set_value(index, value):
        if lines[index].value != value:
            out[index] = lines[index].with_value_token(quote(value)) + lines[index].ending

    if music_directory is not None:
        index = first(lines, "music_directory", None)
        if index is None:
            appended.append(f"music_directory {quote(music_directory)}{newline}")
        else:
            set_value(index, music_directory)
    wanted = {"host": host, "port": None if port is None else str(port)}
    block = proxy_block(conf)
    if block is not None:
        plugin = lines[first(lines, "plugin", block)]
        indent = plugin.body[:len(plugin.body) - len(plugin.body.lstrip(" \t\f"))]
        for name, value in wanted.items():
            index = first(lines, name, block)
            if value is None:
                continue
            if index is None:
                after[first(lines, "plugin", block)].append(f"{indent}{name} {quote(value)}{plugin.ending}")
            else:
                set_value(index, value)
    elif add_proxy_block:
        databases = [opening for name, opening in conf.blocks if name == "database"]
        if databases:
            return databases[0] + 1
        appended += [line + newline for line in ["database {", '    plugin "proxy"']
                     + [f"    {name} {quote(value)}" for name, value in wanted.items() if value is not None]
                     + ["}"]]
    if appended and lines and lines[-1].ending == "":
        out[-1] += newline
    return "".join(line + "".join(extra) for line, extra in zip(out, after)) + "".join(appended)


@SETTINGS
@given(
    conf=mpd_confs(),
    host=st.one_of(st.none(), st.sampled_from(["pi4", "198.18.0.11"]), VALUE),
    port=st.one_of(st.none(), st.sampled_from([6600, 6601]), st.integers(1, 65535)),
    music_directory=st.one_of(st.none(), st.sampled_from(["/srv/music"]), VALUE),
    add_proxy_block=st.booleans(),
)
def test_rewrite_mpd_conf_changes_exactly_the_requested_values(conf, host, port, music_directory,
                                                               add_proxy_block):
    text = conf.text
    arguments = dict(proxy_host=host, proxy_port=port, music_directory=music_directory,
                     add_proxy_block=add_proxy_block)
    if conf.error_line is not None:
        for read in (lambda: rewrite_mpd_conf(text, **arguments),
                     lambda: mpd_proxy(text),
                     lambda: mpd_conf_value(text, "music_directory")):
            with pytest.raises(FileFormatError) as caught:
                read()
            assert str(caught.value).startswith(f"line {conf.error_line}: {conf.error_text}")
        return

    expected = expected_mpd_conf(conf, host, port, music_directory, add_proxy_block)
    if isinstance(expected, int):
        with pytest.raises(FileFormatError) as caught:
            rewrite_mpd_conf(text, **arguments)
        assert str(caught.value) == (
            f"line {expected}: a database block with another plugin is already there and mpd "
            "allows only one database; fix: remove or comment out the other database block")
        return

    out = rewrite_mpd_conf(text, **arguments)
    # (b) only the intended value tokens changed, and missing lines were added
    # where they belong.
    assert out == expected
    if out == text:
        assert out is text

    # (a) reading the result gives the requested values.
    before = mpd_proxy(text)
    if before is not None or add_proxy_block:
        old_host, old_port = before or (None, None)
        assert mpd_proxy(out) == (old_host if host is None else host,
                                  old_port if port is None else str(port))
    else:
        assert mpd_proxy(out) is None
    assert mpd_conf_value(out, "music_directory") == (
        mpd_conf_value(text, "music_directory") if music_directory is None else music_directory)

    # (c) a second rewrite with the same values finds nothing to do.
    assert rewrite_mpd_conf(out, **arguments) is out


# -------------------------------------------------------------------- autofs

KEYS = ["MDrive", "music", "*", "x1"]
WORD = st.text(alphabet="abz09/._:=,é", min_size=1, max_size=6)


@dataclass(frozen=True)
class MapLine:
    body: str
    ending: str = "\n"
    key: str | None = None  # set on the first line of an entry
    options: str = ""
    location: str = ""
    continued: bool = False
    # body = head + options part + location + tail
    head: str = ""  # indentation, key and separator
    options_part: str = ""  # the "-option" words, each with the separator after it
    options_gap: str = ""  # the separator after the last "-option" word


@st.composite
def map_entries(draw):
    head = draw(SPACE) + draw(st.sampled_from(KEYS)) + draw(SOME_SPACE)
    key = head.strip(" \t\f")
    options = draw(st.lists(WORD, max_size=2))
    gaps = [draw(SOME_SPACE) for _ in options]
    options_part = "".join("-" + word + gap for word, gap in zip(options, gaps))
    locations = draw(st.lists(WORD.filter(lambda w: not w.startswith("-")), min_size=1, max_size=2))
    # Replicated servers: several location words, returned as written.
    location = "".join(word + draw(SOME_SPACE) for word in locations[:-1]) + locations[-1]
    tail = draw(SPACE)
    if draw(st.integers(0, 7)):
        return [MapLine(head + options_part + location + tail, key=key, options=",".join(options),
                        location=location, head=head, options_part=options_part,
                        options_gap=gaps[-1] if gaps else "")]
    # The entry written over two lines.
    return [MapLine(head + options_part + "\\", key=key, options=",".join(options), location=location,
                    continued=True),
            MapLine(draw(SOME_SPACE) + location + tail)]


@st.composite
def autofs_maps(draw):
    lines = []
    for kind in draw(st.lists(st.sampled_from(["other", "entry", "entry"]), max_size=8)):
        if kind == "other":
            body = other_line(draw).body
            if "#" in body:
                # A comment ending in a backslash must not swallow the next line.
                body += draw(st.sampled_from(["", "\\"]))
            lines.append(MapLine(body))
        else:
            lines += draw(map_entries())
    endings = draw(st.sampled_from([["\n"], ["\r\n"], ["\n", "\r\n"]]))
    lines = [replace(line, ending=draw(st.sampled_from(endings))) for line in lines]
    # An empty last line without its ending would be no line at all.
    if lines and lines[-1].body and draw(st.booleans()):
        lines[-1] = replace(lines[-1], ending="")
    return lines


@SETTINGS
@given(
    lines=autofs_maps(),
    key=st.sampled_from(KEYS),
    location=WORD.filter(lambda w: not w.startswith("-")),
    options=st.one_of(st.none(), st.just(""), WORD.filter(lambda w: not w.startswith("-"))),
)
def test_rewrite_autofs_map_changes_only_the_keys_line(lines, key, location, options):
    text = "".join(line.body + line.ending for line in lines)
    found = next((i for i, line in enumerate(lines) if line.key == key), None)
    out_lines = [line.body + line.ending for line in lines]
    wanted_options = options
    if found is None:
        wanted_options = options or ""
        words = [key, f"-{options}", location] if options else [key, location]
        if lines and lines[-1].ending == "":
            out_lines[-1] += "\n" if dominant(lines) == "\n" else "\r\n"
        out_lines.append(" ".join(words) + dominant(lines))
    else:
        line = lines[found]
        if options is None:
            wanted_options = line.options
        if line.location == location and wanted_options == line.options:
            assert rewrite_autofs_map(text, key, location=location, options=options) is text
            return
        if line.continued:
            with pytest.raises(FileFormatError) as caught:
                rewrite_autofs_map(text, key, location=location, options=options)
            assert str(caught.value) == (
                f"line {found + 1}: the entry {key!r} continues over several lines; "
                "fix: join it onto one line so it can be rewritten")
            return
        options_part = line.options_part
        if wanted_options == "":
            options_part = ""
        elif wanted_options != line.options:
            options_part = f"-{wanted_options}" + (line.options_gap if line.options else " ")
        tail = line.body[len(line.head + line.options_part + line.location):]
        out_lines[found] = line.head + options_part + location + tail + line.ending

    out = rewrite_autofs_map(text, key, location=location, options=options)
    assert out == "".join(out_lines)
    assert autofs_map_entry(out, key) == (wanted_options, location)
    assert rewrite_autofs_map(out, key, location=location, options=options) is out


@SETTINGS
@given(lines=autofs_maps(), key=st.sampled_from(KEYS))
def test_an_entry_taken_out_comes_back_byte_for_byte(lines, key):
    text = "".join(line.body + line.ending for line in lines)
    entries = [line for line in lines if line.key == key]
    if not entries:
        assert disable_autofs_entry(text, key) is text
        return
    if any(line.continued for line in entries):
        with pytest.raises(FileFormatError):
            disable_autofs_entry(text, key)
        return
    out = disable_autofs_entry(text, key)
    assert autofs_map_entry(out, key) is None, "automount finds no entry for the key"
    assert len(out.splitlines()) == len(text.splitlines())
    first = entries[0]
    if len(first.location.split()) == 1:  # a replicated location cannot be rewritten
        assert rewrite_autofs_map(out, key, location=first.location, options=first.options) == text
