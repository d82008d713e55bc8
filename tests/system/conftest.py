"""The system tier's machines: built, booted and set up once per module (house.py)."""

from __future__ import annotations

import pytest

from tests.system.house import music_house


@pytest.fixture(scope="module")
def house():
    with music_house() as built:
        yield built
