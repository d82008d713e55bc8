"""Examples for pistop_mdns.files: exact outputs for real-looking files."""

import os
import stat

import pytest

from pistop_mdns import files
from pistop_mdns.files import (
    FileFormatError,
    atomic_write,
    autofs_map_entry,
    autofs_master_entries,
    disable_autofs_entry,
    exports_fsid0,
    exports_paths,
    mpd_conf_value,
    mpd_proxy,
    read_text,
    rewrite_autofs_map,
    rewrite_mpd_conf,
)

# Shaped like Debian 12's /etc/mpd.conf on a pistop player: tabs, trailing
# comments, commented-out settings, several blocks.
DEBIAN_CONF = """\
# An example configuration file for MPD.
# Read the user manual for documentation: http://www.musicpd.org/doc/user/
#
# Files and directories #######################################################
#
music_directory\t\t"/var/lib/mpd/music"
#
playlist_directory\t\t"/var/lib/mpd/playlists"
log_file\t\t\t"/var/log/mpd/mpd.log"
pid_file\t\t\t"/run/mpd/pid"
state_file\t\t\t"/var/lib/mpd/state"
sticker_file                   "/var/lib/mpd/sticker.sql"
#
# General music daemon options ################################################
user\t\t\t\t"mpd"
bind_to_address\t\t"localhost"
#port\t\t\t\t"6600"
#
# Database ####################################################################
database {
\tplugin\t"proxy"
\thost\t"pi4"\t# the music server
\tport\t"6600"
}
#
input {
        plugin "curl"
#       proxy "proxy.isp.com:8080"
}
audio_output {
\ttype\t\t"alsa"
\tname\t\t"My ALSA Device"
#\tdevice\t\t"hw:0,0"\t# optional
\tmixer_type      "software"      # optional
}
audio_output {
\ttype\t\t"httpd"
\tname\t\t"My HTTP Stream"
\tport\t\t"8000"
\tbind_to_address\t"0.0.0.0"
}
filesystem_charset\t\t"UTF-8"
"""


# ------------------------------------------------------------------ mpd.conf


def test_reads_top_level_settings_and_proxy_block():
    assert mpd_conf_value(DEBIAN_CONF, "music_directory") == "/var/lib/mpd/music"
    assert mpd_conf_value(DEBIAN_CONF, "bind_to_address") == "localhost"
    # Commented out at top level, set only inside the httpd audio_output.
    assert mpd_conf_value(DEBIAN_CONF, "port") is None
    assert mpd_conf_value(DEBIAN_CONF, "audio_output") is None
    assert mpd_proxy(DEBIAN_CONF) == ("pi4", "6600")


def test_first_top_level_occurrence_wins():
    assert mpd_conf_value('port "6600"\nport "6601"\n', "port") == "6600"


def test_rewrite_changes_only_the_value_tokens():
    out = rewrite_mpd_conf(DEBIAN_CONF, proxy_host="198.18.0.11", proxy_port=6601,
                           music_directory="/srv/music")
    assert out == (DEBIAN_CONF
                   .replace('music_directory\t\t"/var/lib/mpd/music"', 'music_directory\t\t"/srv/music"')
                   .replace('\thost\t"pi4"\t# the music server', '\thost\t"198.18.0.11"\t# the music server')
                   .replace('\tport\t"6600"\n}', '\tport\t"6601"\n}'))
    assert mpd_proxy(out) == ("198.18.0.11", "6601")
    assert mpd_conf_value(out, "music_directory") == "/srv/music"


def test_rewrite_with_the_current_values_returns_the_input_itself():
    out = rewrite_mpd_conf(DEBIAN_CONF, proxy_host="pi4", proxy_port=6600,
                           music_directory="/var/lib/mpd/music", add_proxy_block=True)
    assert out is DEBIAN_CONF


def test_rewrite_with_nothing_requested_returns_the_input_itself():
    assert rewrite_mpd_conf(DEBIAN_CONF) is DEBIAN_CONF


def test_rewrite_keeps_crlf_line_endings():
    text = 'music_directory "/a"\r\ndatabase {\r\n  plugin "proxy"\r\n}\r\n'
    out = rewrite_mpd_conf(text, proxy_host="h", proxy_port=6600, music_directory="/b")
    assert out == ('music_directory "/b"\r\ndatabase {\r\n  plugin "proxy"\r\n'
                   '  host "h"\r\n  port "6600"\r\n}\r\n')


def test_rewrite_appends_with_the_dominant_line_ending():
    text = 'user "mpd"\r\nlog_file "syslog"\r\nport "6600"\n'
    assert rewrite_mpd_conf(text, music_directory="/m") == text + 'music_directory "/m"\r\n'


def test_rewrite_edits_a_last_line_without_newline_in_place():
    text = 'user "mpd"\nmusic_directory "/a"'
    assert rewrite_mpd_conf(text, music_directory="/b") == 'user "mpd"\nmusic_directory "/b"'


def test_rewrite_appends_after_adding_the_missing_final_newline():
    assert rewrite_mpd_conf('user "mpd"', music_directory="/m") == 'user "mpd"\nmusic_directory "/m"\n'


def test_rewrite_appends_to_an_empty_file():
    assert rewrite_mpd_conf("", music_directory="/m") == 'music_directory "/m"\n'


def test_missing_host_and_port_go_after_the_plugin_line_with_its_indentation():
    text = "database {\n\t\tplugin \"proxy\"   # remote\n  # note\n}\n"
    out = rewrite_mpd_conf(text, proxy_host="pi4", proxy_port=6600)
    assert out == ('database {\n\t\tplugin "proxy"   # remote\n\t\thost "pi4"\n\t\tport "6600"\n'
                   "  # note\n}\n")


def test_only_the_missing_port_is_inserted():
    text = 'database {\n  host "old"\n  plugin "proxy"\n}\n'
    out = rewrite_mpd_conf(text, proxy_host="new", proxy_port=6601)
    assert out == 'database {\n  host "new"\n  plugin "proxy"\n  port "6601"\n}\n'


def test_the_first_proxy_database_block_is_the_one_edited():
    text = ('database {\n plugin "simple"\n host "a"\n}\n'
            'database {\n plugin "proxy"\n host "b"\n}\n'
            'database {\n plugin "proxy"\n host "c"\n}\n')
    assert rewrite_mpd_conf(text, proxy_host="z") == text.replace('host "b"', 'host "z"')


def test_host_outside_the_proxy_block_is_left_alone():
    text = 'host "top"\naudio_output {\n host "out"\n}\ndatabase {\n plugin "proxy"\n}\n'
    out = rewrite_mpd_conf(text, proxy_host="pi4")
    assert out == 'host "top"\naudio_output {\n host "out"\n}\ndatabase {\n plugin "proxy"\n host "pi4"\n}\n'


def test_no_proxy_block_leaves_the_text_untouched():
    text = 'music_directory "/m"\naudio_output {\n type "alsa"\n}\n'
    assert rewrite_mpd_conf(text, proxy_host="pi4", proxy_port=6600) is text
    assert mpd_proxy(text) is None


def test_add_proxy_block_appends_one():
    text = 'music_directory "/m"\naudio_output {\n type "alsa"\n}'
    out = rewrite_mpd_conf(text, proxy_host="pi4", proxy_port=6600, add_proxy_block=True)
    assert out == text + '\ndatabase {\n    plugin "proxy"\n    host "pi4"\n    port "6600"\n}\n'


def test_add_proxy_block_uses_crlf_in_a_crlf_file_and_puts_music_directory_first():
    text = 'user "mpd"\r\n'
    out = rewrite_mpd_conf(text, proxy_host="pi4", proxy_port=6600, music_directory="/m",
                           add_proxy_block=True)
    assert out == ('user "mpd"\r\nmusic_directory "/m"\r\ndatabase {\r\n    plugin "proxy"\r\n'
                   '    host "pi4"\r\n    port "6600"\r\n}\r\n')


def test_add_proxy_block_refuses_a_second_database():
    text = 'user "mpd"\ndatabase {\n  plugin "simple"\n  path "/var/lib/mpd/db"\n}\n'
    with pytest.raises(FileFormatError) as caught:
        rewrite_mpd_conf(text, proxy_host="pi4", proxy_port=6600, add_proxy_block=True,
                         path="/etc/mpd.conf")
    assert str(caught.value) == (
        "/etc/mpd.conf line 2: a database block with another plugin is already there and mpd "
        "allows only one database; fix: remove or comment out the other database block")
    # Without add_proxy_block the other database is simply not ours to touch.
    assert rewrite_mpd_conf(text, proxy_host="pi4") is text


def test_unterminated_quote_names_file_line_and_fix():
    text = 'user "mpd"\n\nmusic_directory "/var/lib/mpd/music\n'
    with pytest.raises(FileFormatError) as caught:
        rewrite_mpd_conf(text, music_directory="/m", path="/etc/mpd.conf")
    assert str(caught.value) == "/etc/mpd.conf line 3: unterminated quoted value; fix: close the quote"
    with pytest.raises(FileFormatError) as caught:
        mpd_conf_value(text, "user")
    assert str(caught.value) == "line 3: unterminated quoted value; fix: close the quote"


def test_an_escaped_closing_quote_does_not_terminate():
    with pytest.raises(FileFormatError, match=r"^line 1: unterminated quoted value"):
        mpd_proxy('name "a\\"\n')


@pytest.mark.parametrize("text, message", [
    ('user "mpd"\n}\n',
     "line 2: '}' without an open block; fix: remove the '}' or add the missing 'name {' line above it"),
    ('user "mpd"\naudio_output {\n type "alsa"\n',
     "line 2: the 'audio_output' block is never closed; fix: add a line with '}' after its settings"),
    ('audio_output {\n type "alsa"\n input {\n }\n}\n',
     "line 3: 'input' block inside the 'audio_output' block of line 1; "
     "fix: close the 'audio_output' block with '}' first"),
    ('audio_output { type "alsa"\n}\n',
     "line 1: unexpected text after '{'; fix: put the block's settings on their own lines"),
    ('port "6600" "6601"\n',
     "line 1: unexpected text after the value of 'port'; "
     "fix: quote the whole value or start the comment with #"),
    ('port\n', "line 1: missing value for 'port'; fix: write port \"value\""),
    ('audio_output{\n}\n',
     "line 1: expected a space after 'audio_output'; "
     "fix: put a space between 'audio_output' and the value or '{'"),
    ('"port" "6600"\n',
     "line 1: expected a setting name, found '\"port\" \"6600\"'; "
     "fix: start the line with a setting name or comment it out with #"),
    ("name my'device\n",
     "line 1: quote inside the unquoted value of 'name'; "
     "fix: put the whole value in double quotes, writing \\\" for a quote"),
])
def test_malformed_files_are_refused_with_line_and_fix(text, message):
    with pytest.raises(FileFormatError) as caught:
        rewrite_mpd_conf(text, proxy_host="pi4")
    assert str(caught.value) == message


def test_escapes_are_read_and_written():
    text = 'database {\n plugin "proxy"\n host "a \\"b\\" \\\\c \\d"\n}\n'
    assert mpd_proxy(text) == ('a "b" \\c d', None)
    # Equal after unescaping: nothing to change.
    assert rewrite_mpd_conf(text, proxy_host='a "b" \\c d') is text
    out = rewrite_mpd_conf(text, proxy_host='x"y\\z')
    assert out == 'database {\n plugin "proxy"\n host "x\\"y\\\\z"\n}\n'
    assert mpd_proxy(out) == ('x"y\\z', None)


def test_unquoted_values_are_read_and_rewritten_quoted():
    text = "port 6600 # default\ndatabase {\n plugin proxy\n port 6600\n}\n"
    assert mpd_conf_value(text, "port") == "6600"
    assert mpd_proxy(text) == (None, "6600")
    assert rewrite_mpd_conf(text, proxy_port=6600) is text
    assert rewrite_mpd_conf(text, proxy_port=6601) == text.replace(" port 6600\n", ' port "6601"\n')


def test_utf8_values_and_comments_survive():
    text = '# Musik für alle\nmusic_directory "/srv/Musik/Ärzte"  # ✓\n'
    assert mpd_conf_value(text, "music_directory") == "/srv/Musik/Ärzte"
    assert rewrite_mpd_conf(text, music_directory="/srv/音楽") == (
        '# Musik für alle\nmusic_directory "/srv/音楽"  # ✓\n')


def test_music_directory_is_appended_when_missing():
    assert rewrite_mpd_conf('user "mpd"\n', music_directory="/srv/music") == (
        'user "mpd"\nmusic_directory "/srv/music"\n')


@pytest.mark.parametrize("arguments", [
    {"proxy_host": "pi4\nport 1"},
    {"proxy_host": "pi4\r"},
    {"music_directory": "/srv\0music"},
    {"proxy_port": 0},
    {"proxy_port": 65536},
    {"proxy_port": True},
    {"proxy_port": "6600"},
])
def test_values_that_cannot_be_written_safely_are_refused(arguments):
    with pytest.raises(ValueError) as caught:
        rewrite_mpd_conf(DEBIAN_CONF, **arguments)
    assert not isinstance(caught.value, FileFormatError)


# -------------------------------------------------------------------- autofs


def test_pistop_master_entry():
    assert autofs_master_entries("/var/lib/mpd /etc/autofs.mounts timeout=60\n") == [
        ("/var/lib/mpd", "/etc/autofs.mounts")]


def test_master_skips_includes_builtin_and_non_file_maps():
    text = ("#\n# Sample auto.master file\n#\n"
            "/misc\t/etc/auto.misc\n"
            "/net\t-hosts\n"
            "+dir:/etc/auto.master.d\n"
            "+auto.master\n"
            "/smb program:/etc/auto.smb --timeout=60\n"
            "/home\typ:auto.home\n"
            "/data file:/etc/auto.data\n"
            "/sun file,sun:/etc/auto.sun\r\n"
            "/-  /etc/auto.direct \\\n   --timeout 30\n"
            "/bare auto.bare")
    assert autofs_master_entries(text) == [
        ("/misc", "/etc/auto.misc"),
        ("/data", "/etc/auto.data"),
        ("/sun", "/etc/auto.sun"),
        ("/-", "/etc/auto.direct"),
    ]


def test_master_entry_without_map_is_refused():
    with pytest.raises(FileFormatError) as caught:
        autofs_master_entries("# x\n/var/lib/mpd\n", path="/etc/auto.master.d/pistop.autofs")
    assert str(caught.value) == (
        "/etc/auto.master.d/pistop.autofs line 2: mount point '/var/lib/mpd' has no map; "
        "fix: add the map file after the mount point, or comment the line out")


PISTOP_MAP = "MDrive -fstype=nfs,vers=4,soft,timeo=5,retry=1 pi4:/home/pi/MDrive\n"


def test_pistop_map_entry_is_read():
    assert autofs_map_entry(PISTOP_MAP, "MDrive") == (
        "fstype=nfs,vers=4,soft,timeo=5,retry=1", "pi4:/home/pi/MDrive")
    assert autofs_map_entry(PISTOP_MAP, "mdrive") is None


def test_an_entry_taken_out_is_a_marked_comment_and_pointing_it_puts_it_back_in_place():
    text = "# music\r\n\tMDrive -fstype=nfs 198.18.0.11:/MDrive\r\nother h:/x\r\n"
    out = disable_autofs_entry(text, "MDrive")
    assert out == "# music\r\n#pistop-mdns-off# \tMDrive -fstype=nfs 198.18.0.11:/MDrive\r\nother h:/x\r\n"
    assert autofs_map_entry(out, "MDrive") is None, "automount no longer sees it"
    assert disable_autofs_entry(out, "MDrive") is out
    assert rewrite_autofs_map(out, "MDrive", location="198.18.0.11:/MDrive") == text
    assert rewrite_autofs_map(out, "MDrive", location="198.18.0.13:/MDrive", options="fstype=nfs,soft") == (
        "# music\r\n\tMDrive -fstype=nfs,soft 198.18.0.13:/MDrive\r\nother h:/x\r\n")


def test_taking_out_an_absent_or_continued_entry():
    assert disable_autofs_entry(PISTOP_MAP, "music") is PISTOP_MAP
    with pytest.raises(FileFormatError) as caught:
        disable_autofs_entry("MDrive -fstype=nfs \\\n  pi4:/x\n", "MDrive", path="/etc/autofs.mounts")
    assert str(caught.value) == ("/etc/autofs.mounts line 1: the entry 'MDrive' continues over several lines; "
                                 "fix: join it onto one line so it can be taken out and put back")


def test_a_comment_that_only_looks_like_a_taken_out_entry_of_another_key_stays():
    text = "#pistop-mdns-off# music h:/m\n"
    assert rewrite_autofs_map(text, "MDrive", location="h:/x") == text + "MDrive h:/x\n"


def test_pistop_map_entry_is_pointed_at_the_new_server():
    assert rewrite_autofs_map(PISTOP_MAP, "MDrive", location="198.18.0.11:/srv/music") == (
        "MDrive -fstype=nfs,vers=4,soft,timeo=5,retry=1 198.18.0.11:/srv/music\n")


def test_map_rewrite_keeps_layout_comments_other_entries_and_crlf():
    text = ("# autofs map\r\n"
            "cd\t-fstype=iso9660,ro,nosuid,nodev\t:/dev/cdrom\r\n"
            "\r\n"
            "MDrive\t\t-fstype=nfs,vers=4   pi4:/home/pi/MDrive   \r\n"
            "other  server:/x")
    out = rewrite_autofs_map(text, "MDrive", location="198.18.0.11:/srv/music",
                             options="fstype=nfs,vers=4,soft")
    assert out == text.replace("MDrive\t\t-fstype=nfs,vers=4   pi4:/home/pi/MDrive   \r\n",
                               "MDrive\t\t-fstype=nfs,vers=4,soft   198.18.0.11:/srv/music   \r\n")


def test_map_reads_several_option_words_and_continued_entries():
    text = "a -rw -soft host:/a\nb \\\n  -ro \\\n  host:/b\n# c not-a-key\n"
    assert autofs_map_entry(text, "a") == ("rw,soft", "host:/a")
    assert autofs_map_entry(text, "b") == ("ro", "host:/b")
    assert autofs_map_entry(text, "c") is None
    assert autofs_map_entry(text, "-ro") is None


def test_map_options_can_be_added_and_removed():
    assert rewrite_autofs_map("k\thost:/a\n", "k", location="host:/a", options="ro") == "k\t-ro host:/a\n"
    assert rewrite_autofs_map("k -rw  host:/a\n", "k", location="host:/b", options="") == "k host:/b\n"


def test_map_missing_key_is_appended():
    assert rewrite_autofs_map("a host:/a", "MDrive", location="h:/m", options="fstype=nfs") == (
        "a host:/a\nMDrive -fstype=nfs h:/m\n")
    assert rewrite_autofs_map("", "MDrive", location="h:/m") == "MDrive h:/m\n"
    assert rewrite_autofs_map("a host:/a\r\n", "MDrive", location="h:/m", options="") == (
        "a host:/a\r\nMDrive h:/m\r\n")


def test_map_unchanged_returns_the_input_itself():
    assert rewrite_autofs_map(PISTOP_MAP, "MDrive", location="pi4:/home/pi/MDrive",
                              options="fstype=nfs,vers=4,soft,timeo=5,retry=1") is PISTOP_MAP


def test_continued_map_entry_is_read_but_not_edited():
    text = "x host:/x\nMDrive -fstype=nfs \\\n    pi4:/home/pi/MDrive\n"
    assert rewrite_autofs_map(text, "MDrive", location="pi4:/home/pi/MDrive") is text
    with pytest.raises(FileFormatError) as caught:
        rewrite_autofs_map(text, "MDrive", location="h:/m", path="/etc/autofs.mounts")
    assert str(caught.value) == (
        "/etc/autofs.mounts line 2: the entry 'MDrive' continues over several lines; "
        "fix: join it onto one line so it can be rewritten")


def test_map_entry_without_location_is_refused():
    with pytest.raises(FileFormatError) as caught:
        autofs_map_entry("MDrive -fstype=nfs\n", "MDrive")
    assert str(caught.value) == (
        "line 1: the entry 'MDrive' has no location; fix: add the location (server:/path) "
        "at the end of the line")


@pytest.mark.parametrize("key, location, options", [
    ("MDrive", "h:/my music", None),
    ("MDrive", "h:/m\n", None),
    ("MDrive", "", None),
    ("MDrive", "-h:/m", None),
    ("MDrive", "h:/m\\", None),
    ("MDrive", "h:/m", "ro, soft"),
    ("MDrive", "h:/m", "-ro"),
    ("M Drive", "h:/m", None),
    ("#MDrive", "h:/m", None),
])
def test_map_values_autofs_would_misparse_are_refused(key, location, options):
    with pytest.raises(ValueError):
        rewrite_autofs_map(PISTOP_MAP, key, location=location, options=options)


# ------------------------------------------------------------------- exports

EXPORTS = """\
# /etc/exports: the access control list for filesystems which may be exported
#\t\tto NFS clients.  See exports(5).
#
/srv/nfs4        192.168.1.0/24(rw,sync,fsid=0,crossmnt,no_subtree_check)
/srv/nfs4/music  192.168.1.0/24(ro,sync,no_subtree_check) \\
                 pi4(rw,sync,no_subtree_check)   # the players
"/srv/My Music"  *(ro)
/home/pi/MDrive\t-ro\tpi*.local
"""


def test_exports_paths_handle_quotes_continuations_and_comments():
    assert exports_paths(EXPORTS) == ["/srv/nfs4", "/srv/nfs4/music", "/srv/My Music", "/home/pi/MDrive"]


def test_exports_fsid0_finds_the_nfs4_pseudo_root():
    assert exports_fsid0(EXPORTS) == "/srv/nfs4"
    assert exports_fsid0('/a h(ro)\n"/b c" h(rw) h2(ro,fsid=root)\n') == "/b c"
    assert exports_fsid0("/a -fsid=0,ro h\n") == "/a"
    assert exports_fsid0("/a h(ro,fsid=10)\n/b h(fsid=01)\n") is None
    assert exports_fsid0("") is None


def test_exports_unterminated_quote_is_refused():
    with pytest.raises(FileFormatError) as caught:
        exports_paths('/a h(ro)\n"/b h(ro)\n', path="/etc/exports")
    assert str(caught.value) == "/etc/exports line 2: unterminated quoted path; fix: close the quote"


def test_exports_text_glued_to_a_quoted_path_is_refused():
    with pytest.raises(FileFormatError) as caught:
        exports_paths('"/srv/My Music"h(ro)\n')
    assert str(caught.value) == (
        "line 1: unexpected text right after the path '/srv/My Music'; "
        "fix: put a space between the path and the clients")
    assert exports_paths('"/srv/a b"# no clients yet\n') == ["/srv/a b"]


def test_exports_unclosed_options_are_refused():
    with pytest.raises(FileFormatError) as caught:
        exports_fsid0("/a h(ro,\n")
    assert str(caught.value) == (
        "line 1: unclosed '(' in 'h(ro,'; fix: end the option list with ')' and no space inside it")


# ------------------------------------------------------------- file access


def test_unchanged_content_writes_nothing(tmp_path):
    conf = tmp_path / "mpd.conf"
    conf.write_bytes(b'user "mpd"\r\n')
    os.utime(conf, ns=(1_000_000_000, 1_000_000_000))
    assert atomic_write(conf, 'user "mpd"\r\n') is False
    assert conf.stat().st_mtime_ns == 1_000_000_000
    assert sorted(os.listdir(tmp_path)) == ["mpd.conf"]


def test_changed_content_is_replaced_with_a_backup_and_the_mode_kept(tmp_path):
    conf = tmp_path / "mpd.conf"
    conf.write_bytes(b'user "mpd"\n')
    conf.chmod(0o640)
    (tmp_path / "mpd.conf.bak").write_bytes(b"older backup\n")
    assert atomic_write(conf, 'user "pi"\n') is True
    assert conf.read_bytes() == b'user "pi"\n'
    assert (tmp_path / "mpd.conf.bak").read_bytes() == b'user "mpd"\n'
    assert stat.S_IMODE(conf.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "mpd.conf.bak").stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["mpd.conf", "mpd.conf.bak"]


def test_text_is_written_byte_for_byte(tmp_path):
    conf = tmp_path / "mpd.conf"
    assert atomic_write(conf, 'a "Ä"\r\nb "c"', backup_suffix=None) is True
    assert conf.read_bytes() == 'a "Ä"\r\nb "c"'.encode()
    assert read_text(conf) == 'a "Ä"\r\nb "c"'


def test_new_file_gets_mode_0644_and_no_backup(tmp_path):
    conf = tmp_path / "auto.pistop"
    old_umask = os.umask(0o077)
    try:
        assert atomic_write(str(conf), "MDrive h:/m\n") is True
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(conf.stat().st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["auto.pistop"]


def test_no_backup_when_the_suffix_is_none(tmp_path):
    conf = tmp_path / "mpd.conf"
    conf.write_text("old\n")
    assert atomic_write(conf, "new\n", backup_suffix=None) is True
    assert sorted(os.listdir(tmp_path)) == ["mpd.conf"]


def test_symlink_is_written_through_and_stays_a_symlink(tmp_path):
    target = tmp_path / "real" / "mpd.conf"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "mpd.conf"
    link.symlink_to(target)
    assert atomic_write(link, "new\n") is True
    assert link.is_symlink()
    assert os.readlink(link) == str(target)
    assert target.read_text() == "new\n"
    assert (tmp_path / "mpd.conf.bak").read_text() == "old\n"
    assert os.listdir(target.parent) == ["mpd.conf"]


def test_owner_is_kept_when_running_as_root(tmp_path, monkeypatch):
    conf = tmp_path / "mpd.conf"
    conf.write_text("old\n")
    owner = (conf.stat().st_uid, conf.stat().st_gid)
    given = []
    # As root the new file (and the backup) get the old file's owner; without
    # root nobody can give files away, so the call is recorded, not made.
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "fchown", lambda fd, uid, gid: given.append((uid, gid)))
    assert atomic_write(conf, "new\n") is True
    assert given == [owner, owner]
    assert conf.read_text() == "new\n"


class Crash(Exception):
    pass


@pytest.mark.parametrize("backup_suffix", [".bak", None])
def test_crash_in_replace_leaves_the_original_intact(tmp_path, monkeypatch, backup_suffix):
    conf = tmp_path / "mpd.conf"
    conf.write_bytes(b'user "mpd"\r\n')

    def crash(source, destination):
        raise Crash

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(Crash):
        atomic_write(conf, "new\n", backup_suffix=backup_suffix)
    assert conf.read_bytes() == b'user "mpd"\r\n'
    assert sorted(os.listdir(tmp_path)) == ["mpd.conf"]


def test_crash_replacing_the_file_after_the_backup_leaves_the_original_intact(tmp_path, monkeypatch):
    conf = tmp_path / "mpd.conf"
    conf.write_bytes(b"old\n")
    real_replace = os.replace

    def crash_on_the_file(source, destination):
        if os.fspath(destination) == str(conf):
            raise Crash
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", crash_on_the_file)
    with pytest.raises(Crash):
        atomic_write(conf, "new\n")
    assert conf.read_bytes() == b"old\n"
    assert (tmp_path / "mpd.conf.bak").read_bytes() == b"old\n"
    assert sorted(os.listdir(tmp_path)) == ["mpd.conf", "mpd.conf.bak"]


def test_crash_in_fsync_leaves_the_original_intact(tmp_path, monkeypatch):
    conf = tmp_path / "mpd.conf"
    conf.write_bytes(b"old\n")

    def crash(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="Input/output error"):
        atomic_write(conf, "new\n")
    assert conf.read_bytes() == b"old\n"
    assert sorted(os.listdir(tmp_path)) == ["mpd.conf"]


def test_read_text_explains_a_missing_file(tmp_path):
    missing = tmp_path / "mpd.conf"
    with pytest.raises(FileFormatError) as caught:
        read_text(missing, setting="client.mpd_conf")
    assert str(caught.value) == (
        f"cannot read {missing}: No such file or directory; fix: create it or set client.mpd_conf")


def test_read_text_explains_permission_denied(monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files, "open", denied, raising=False)
    with pytest.raises(FileFormatError) as caught:
        read_text("/etc/mpd.conf", setting="client.mpd_conf")
    assert str(caught.value) == (
        "cannot read /etc/mpd.conf: Permission denied; fix: run as root or set client.mpd_conf")


def test_read_text_explains_bad_encoding(tmp_path):
    conf = tmp_path / "mpd.conf"
    conf.write_bytes(b'user "mpd"\nname "\xff"\n')
    with pytest.raises(FileFormatError) as caught:
        read_text(conf)
    assert str(caught.value) == f"cannot read {conf}: line 2 is not valid utf-8; fix: save the file as utf-8"
