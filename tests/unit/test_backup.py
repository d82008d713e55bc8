"""Backup planning (pure) and run_backup with a recording runner on temporary directories."""

from __future__ import annotations

import logging
import os

import pytest

from pistop_mdns import backup, config
from pistop_mdns.backup import DIRECTORY, FILE, MISSING, PathInfo, Skip, Step
from pistop_mdns.executor import Result

DEFAULT_OPTIONS = ["-alptgomHE", "--delete"]


def make_cfg(**values) -> config.Config:
    """Defaults plus `section__key=value`, never the machine's own configuration file."""
    flags = {tuple(k.split("__")): v for k, v in values.items()}
    return config.load("/dev/null", None, {("general", "hostname"): "kitchen", **flags})


class RecordingRunner:
    """Stands in for executor.Runner: records argv, answers with the given exit status."""

    def __init__(self, rc: int = 0, err: str = ""):
        self.calls: list[tuple[str, ...]] = []
        self.rc = rc
        self.err = err

    def run(self, argv, *, timeout=None, input=None, env=None) -> Result:
        self.calls.append(tuple(argv))
        return Result(tuple(argv), self.rc, err=self.err)


def fake_probe(table: dict[str, tuple[str, str] | str]):
    """probe() over a dict: path -> kind, or (kind, real path)."""

    def probe(path: str) -> PathInfo:
        entry = table.get(path, MISSING)
        kind, real = entry if isinstance(entry, tuple) else (entry, path)
        return PathInfo(kind, real)

    return probe


# ---------------------------------------------------------------- plan


def test_a_directory_is_synced_into_the_directory_of_the_same_name():
    steps = backup.plan(["/etc"], "/mnt/disk", "kitchen", DEFAULT_OPTIONS, probe=fake_probe({"/etc": DIRECTORY}))
    assert steps == [Step("/etc", "/etc/", "/mnt/disk/backup/kitchen/etc/", "/mnt/disk/backup/kitchen",
                          ("rsync", "-alptgomHE", "--delete", "--", "/etc/", "/mnt/disk/backup/kitchen/etc/"))]


def test_a_file_goes_into_the_directory_of_its_parent():
    steps = backup.plan(["/etc/fstab"], "/mnt/disk", "kitchen", DEFAULT_OPTIONS,
                        probe=fake_probe({"/etc/fstab": FILE}))
    assert steps == [Step("/etc/fstab", "/etc/fstab", "/mnt/disk/backup/kitchen/etc/",
                          "/mnt/disk/backup/kitchen/etc",
                          ("rsync", "-alptgomHE", "--delete", "--", "/etc/fstab", "/mnt/disk/backup/kitchen/etc/"))]


def test_a_nested_directory_needs_its_parents_made_first():
    [step] = backup.plan(["/home/pi/.config"], "/mnt/disk", "kitchen", DEFAULT_OPTIONS,
                         probe=fake_probe({"/home/pi/.config": DIRECTORY}))
    assert step.target == "/mnt/disk/backup/kitchen/home/pi/.config/"
    assert step.parent == "/mnt/disk/backup/kitchen/home/pi"


def test_rsync_options_replace_the_defaults_and_dry_run_adds_rsyncs_own():
    [step] = backup.plan(["/etc/hosts"], "/d", "h", ["-a"], probe=fake_probe({"/etc/hosts": FILE}), dry_run=True)
    assert step.argv == ("rsync", "-a", "--dry-run", "--itemize-changes", "--", "/etc/hosts", "/d/backup/h/etc/")


def test_paths_are_normalised():
    steps = backup.plan(["/etc/", "//var//lib/mpd"], "/d", "h", DEFAULT_OPTIONS,
                        probe=fake_probe({"/etc": DIRECTORY, "/var/lib/mpd": DIRECTORY}))
    assert [s.source for s in steps] == ["/etc/", "/var/lib/mpd/"]


@pytest.mark.parametrize("path, reason", [
    ("etc/fstab", "not an absolute path"),
    ("/etc/../root", "contains '..'"),
    ("/nowhere", "no such file or directory"),
])
def test_unusable_paths_are_skipped_with_the_reason(path, reason):
    [step] = backup.plan([path], "/d", "h", DEFAULT_OPTIONS, probe=fake_probe({"/etc/fstab": FILE}))
    assert isinstance(step, Skip) and reason in step.reason


@pytest.mark.parametrize("path, probe_table", [
    ("/mnt/disk/music", {"/mnt/disk/music": DIRECTORY}),  # inside DEST
    ("/mnt", {"/mnt": DIRECTORY}),  # holds DEST: it would copy the backup into itself
    ("/", {"/": DIRECTORY}),
    ("/srv/link", {"/srv/link": (FILE, "/mnt/disk/backup/x")}),  # resolves into DEST
])
def test_paths_overlapping_the_destination_are_refused(path, probe_table):
    table = {"/mnt/disk": DIRECTORY, **probe_table}
    [step] = backup.plan([path], "/mnt/disk", "h", DEFAULT_OPTIONS, probe=fake_probe(table))
    assert isinstance(step, Skip) and "overlaps the backup destination" in step.reason


def test_a_file_beside_the_destination_is_fine():
    [step] = backup.plan(["/mnt/disk-notes"], "/mnt/disk", "h", DEFAULT_OPTIONS,
                         probe=fake_probe({"/mnt/disk": DIRECTORY, "/mnt/disk-notes": FILE}))
    assert isinstance(step, Step)


# ---------------------------------------------------------------- destination


@pytest.mark.parametrize("dest, hostname, status, words", [
    ("", "h", 2, "[backup] dest is not set"),
    ("mnt/disk", "h", 2, "not an absolute path"),
    ("/mnt", "../x", 2, "cannot name a directory"),
])
def test_destination_configuration_mistakes_are_status_2(dest, hostname, status, words):
    with pytest.raises(backup.BackupRefused) as e:
        backup.check_destination(dest, hostname)
    assert e.value.status == status and words in str(e.value)


def test_a_missing_backup_directory_means_the_disk_is_not_mounted_and_is_never_created(tmp_path):
    with pytest.raises(backup.BackupRefused) as e:
        backup.check_destination(str(tmp_path), "h")
    assert e.value.status == 1 and "not mounted" in str(e.value) and str(tmp_path / "backup") in str(e.value)
    assert not (tmp_path / "backup").exists()


def test_a_host_directory_that_is_a_symlink_out_is_refused(tmp_path):
    (tmp_path / "backup").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "backup" / "h").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(backup.BackupRefused, match="symlink out of"):
        backup.check_destination(str(tmp_path), "h")


# ---------------------------------------------------------------- run_backup


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    (src / "conf").mkdir(parents=True)
    (src / "conf" / "a").write_text("a")
    (src / "hosts").write_text("h")
    dest = tmp_path / "disk"
    (dest / "backup").mkdir(parents=True)
    return src, dest


def test_run_backup_runs_rsync_per_path_and_logs_its_status(tree, caplog):
    src, dest = tree
    cfg = make_cfg(backup__paths=[f"{src}/conf", f"{src}/hosts"], backup__dest=str(dest))
    runner = RecordingRunner()
    with caplog.at_level(logging.INFO):
        assert backup.run_backup(cfg, runner) is True
    base = f"{dest}/backup/kitchen{src}"
    assert runner.calls == [
        ("rsync", "-alptgomHE", "--delete", "--", f"{src}/conf/", f"{base}/conf/"),
        ("rsync", "-alptgomHE", "--delete", "--", f"{src}/hosts", f"{base}/"),
    ]
    assert os.path.isdir(base)  # the parents rsync does not make itself
    lines = [r.getMessage() for r in caplog.records if "rsync status" in r.getMessage()]
    assert lines == [f"backup {src}/conf -> {base}/conf/: rsync status 0",
                     f"backup {src}/hosts -> {base}/: rsync status 0"]


def test_default_dest_is_used_when_dest_is_empty(tree):
    src, dest = tree
    runner = RecordingRunner()
    assert backup.run_backup(make_cfg(backup__paths=[f"{src}/hosts"]), runner, default_dest=str(dest))
    assert runner.calls[0][-1] == f"{dest}/backup/kitchen{src}/"


def test_a_failing_path_makes_the_backup_fail_and_says_why(tree, caplog):
    src, dest = tree
    runner = RecordingRunner(rc=23, err="rsync error: some files could not be transferred")
    with caplog.at_level(logging.INFO):
        ok = backup.run_backup(make_cfg(backup__paths=[f"{src}/hosts"], backup__dest=str(dest)), runner)
    assert ok is False
    assert "rsync status 23" in caplog.text and "could not be transferred" in caplog.text


def test_a_missing_path_fails_but_the_others_are_copied(tree, caplog):
    src, dest = tree
    runner = RecordingRunner()
    cfg = make_cfg(backup__paths=[f"{src}/gone", f"{src}/hosts"], backup__dest=str(dest))
    with caplog.at_level(logging.INFO):
        assert backup.run_backup(cfg, runner) is False
    assert len(runner.calls) == 1 and f"backup {src}/gone: not copied: no such file" in caplog.text


def test_without_the_disk_nothing_runs_and_nothing_is_created(tmp_path, caplog):
    runner = RecordingRunner()
    cfg = make_cfg(backup__paths=["/etc/hosts"], backup__dest=str(tmp_path))
    assert backup.run_backup(cfg, runner) is False
    assert runner.calls == [] and os.listdir(tmp_path) == []
    assert "not mounted" in caplog.text


def test_a_symlink_inside_the_host_directory_cannot_lead_rsync_out(tree, tmp_path, caplog):
    src, dest = tree
    outside = tmp_path / "outside"
    outside.mkdir()
    host = dest / "backup" / "kitchen"
    host.mkdir()
    first = src.parts[1]  # the first component of the source path, e.g. "tmp"
    (host / first).symlink_to(outside)
    runner = RecordingRunner()
    cfg = make_cfg(backup__paths=[f"{src}/hosts"], backup__dest=str(dest))
    assert backup.run_backup(cfg, runner) is False
    assert runner.calls == [] and os.listdir(outside) == []
    assert "through a symlink" in caplog.text


def test_nothing_to_back_up_is_success():
    runner = RecordingRunner()
    assert backup.run_backup(make_cfg(), runner) is True and runner.calls == []


def test_a_dry_run_runner_creates_no_directory(tree):
    src, dest = tree
    runner = RecordingRunner()
    runner.dry_run = True  # as executor.Runner(dry_run=True) of `pistop-mdns client --dry-run`
    assert backup.run_backup(make_cfg(backup__paths=[f"{src}/hosts"], backup__dest=str(dest)), runner)
    assert os.listdir(dest / "backup") == []


def test_dry_run_creates_nothing_and_prints_the_plan(tree):
    src, dest = tree
    printed: list[str] = []
    runner = RecordingRunner()
    cfg = make_cfg(backup__paths=[f"{src}/conf"], backup__dest=str(dest))
    assert backup.execute(cfg, runner, dry_run=True, echo=printed.append) is True
    assert os.listdir(dest / "backup") == []
    assert runner.calls == []  # its parent does not exist yet: everything would be copied
    assert any("would create" in line and f"{src}/conf/" in line for line in printed)
