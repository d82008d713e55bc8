"""Issue 7, item 5: `python -m build` makes an sdist and a wheel, and `pip install`
of the wheel into a fresh virtualenv gives the same working command.

Runs once, in the Debian-stack run, like the .deb test (marked packaging). The
builder is the first Python that has `build`: $PISTOP_BUILD_PYTHON, the
checkout's .venv-pypi (tools/test makes it), or the Python running the tests
(Debian's python3-build). The build and pip fetch setuptools and the runtime
dependencies from PyPI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.packaging.support import copy_checkout, remove_tree, run

pytestmark = pytest.mark.packaging

with open(REPO / "pyproject.toml", "rb") as _f:
    VERSION = tomllib.load(_f)["project"]["version"]


def builder_python() -> str:
    candidates = [os.environ.get("PISTOP_BUILD_PYTHON"), str(REPO / ".venv-pypi/bin/python"), sys.executable]
    for python in filter(None, candidates):
        if not Path(python).exists():
            continue
        probe = subprocess.run([python, "-c", "import build, venv"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return python
    pytest.fail(f"no Python with the `build` module among {[c for c in candidates if c]}; fix: run tools/test "
                f"(it makes .venv-pypi with build) or apt-get install python3-build")


@pytest.fixture
def workdir():
    path = Path(tempfile.mkdtemp(prefix="pistop-mdns-wheel-"))
    yield path
    remove_tree(path)


def test_sdist_and_wheel_install_into_a_fresh_venv_as_a_working_command(workdir):
    python = builder_python()
    print(f"\nbuilding with {python}")
    src = copy_checkout(workdir)
    dist = workdir / "dist"
    # Without --sdist/--wheel, build makes the sdist and then the wheel from it: both are checked.
    run([python, "-m", "build", "--outdir", str(dist), str(src)], timeout=600, what="python -m build")
    sdists = sorted(dist.glob("*.tar.gz"))
    wheels = sorted(dist.glob("*.whl"))
    assert [p.name for p in wheels] == [f"pistop_mdns-{VERSION}-py3-none-any.whl"]
    assert [p.name for p in sdists] in ([f"pistop_mdns-{VERSION}.tar.gz"], [f"pistop-mdns-{VERSION}.tar.gz"])
    with tarfile.open(sdists[0]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "pistop_mdns/cli.py", "pistop_mdns/actions/browse.py"} <= names
    with zipfile.ZipFile(wheels[0]) as wheel:
        entry_points = wheel.read(f"pistop_mdns-{VERSION}.dist-info/entry_points.txt").decode()
    assert "pistop-mdns = pistop_mdns.cli:main" in entry_points

    venv = workdir / "venv"
    run([python, "-m", "venv", str(venv)], timeout=300, what="python -m venv")
    run([str(venv / "bin/pip"), "install", "-q", str(wheels[0])], timeout=600, what="pip install the wheel")
    clean = {"PATH": f"{venv}/bin:/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8"}
    version = run([str(venv / "bin/pistop-mdns"), "--version"], timeout=60, env=clean)
    assert version.stdout.strip() == f"pistop-mdns, version {VERSION}"
    # The command runs from the venv, on the libraries pip put there.
    where = run([str(venv / "bin/python"), "-c",
                 "import click, netifaces, sh, zeroconf, pistop_mdns\n"
                 "for m in (click, netifaces, sh, zeroconf, pistop_mdns): print(m.__file__)"],
                timeout=60, env=clean, cwd=workdir).stdout.split()
    assert all(path.startswith(str(venv)) for path in where), where
    run([str(venv / "bin/pistop-mdns"), "config", "check"], timeout=60, env=clean, cwd=workdir)
