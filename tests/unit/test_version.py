"""One version everywhere: pyproject.toml, the package, debian/changelog, the man page."""

import re
import shlex
import tomllib

import pistop_mdns
from tests.helpers import REPO


def pyproject_version() -> str:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def debian_upstream_version() -> str:
    """`pistop-mdns (1:0.1.0-1) unstable; ...` -> 0.1.0 (no epoch, no Debian revision)."""
    first = (REPO / "debian" / "changelog").read_text(encoding="utf-8").splitlines()[0]
    m = re.match(r"^pistop-mdns \((?:\d+:)?(?P<upstream>[^)\s]+)-[^-)\s]+\) ", first)
    assert m, f"debian/changelog: first line is not `pistop-mdns (VERSION-REVISION) ...`: {first!r}"
    return m.group("upstream")


def man_page_version() -> str:
    """.TH NAME SECTION DATE "pistop-mdns VERSION" MANUAL -> VERSION."""
    for line in (REPO / "man" / "pistop-mdns.1").read_text(encoding="utf-8").splitlines():
        if line.startswith(".TH "):
            fields = shlex.split(line)
            assert len(fields) >= 5, f"man/pistop-mdns.1: .TH has no source field: {line!r}"
            m = re.fullmatch(r"pistop-mdns (\S+)", fields[4])
            assert m, f"man/pistop-mdns.1: .TH source field is not `pistop-mdns VERSION`: {line!r}"
            return m.group(1)
    raise AssertionError("man/pistop-mdns.1 has no .TH line")


def test_pyproject_version_is_the_package_version():
    assert pyproject_version() == pistop_mdns.__version__


def test_debian_changelog_packages_the_same_version():
    assert debian_upstream_version() == pyproject_version()


def test_man_page_documents_the_same_version():
    assert man_page_version() == pyproject_version()
