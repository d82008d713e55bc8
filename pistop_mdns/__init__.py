"""pistop-mdns: a house of music players that starts and stops together.

A music server advertises `_pistop._tcp` over mDNS/DNS-SD; every room's board
browses for it, mounts its share, points mpd at it, and tears everything down
when the server goes away. No IP address is typed anywhere.
"""

# Kept equal to pyproject.toml's version and debian/changelog by a unit test.
__version__ = "0.1.0"

SERVICE_TYPE = "_pistop._tcp.local."
# Version of the TXT/channel protocol; a client ignores servers whose major
# protocol version is newer than its own.
PROTOCOL = 1
