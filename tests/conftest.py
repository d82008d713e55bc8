import pytest

from pistop_mdns.lan import Lan
from tests.helpers import need, need_root


@pytest.fixture
def make_lan():
    """make_lan(["musicpi", "kitchen"]) -> a Lan that is torn down after the test."""
    made = []

    def make(hosts: list[str]) -> Lan:
        need_root()
        need("ip", "nsenter", "unshare", package="iproute2 util-linux")
        lan = Lan(hosts)
        made.append(lan)
        lan.__enter__()
        return lan

    yield make
    for lan in reversed(made):
        lan.down()
