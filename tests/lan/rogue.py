"""A rogue mDNS advertiser for the fault tests, run inside a LAN host:

    python3 rogue.py IP INSTANCE PORT SECONDS TXT_HEX

registers INSTANCE._pistop._tcp.local. with the raw TXT record TXT_HEX (any
bytes, also invalid ones), on IP, without probing (as a spoofer would: it
overwrites what caches hold for that name), keeps it for SECONDS, then sends
goodbyes. It prints "registered" once the announcement went out.
"""

import signal
import socket
import sys
import time

from zeroconf import ServiceInfo, Zeroconf

# SIGINT ends the sleep (and sends the goodbyes) even when whatever started
# the tests ran them in the background of a shell, which ignores SIGINT there.
signal.signal(signal.SIGINT, signal.default_int_handler)
ip, instance, port, seconds, txt_hex = sys.argv[1:6]
zc = Zeroconf(interfaces=[ip])
info = ServiceInfo(
    "_pistop._tcp.local.",
    f"{instance}._pistop._tcp.local.",
    port=int(port),
    properties=bytes.fromhex(txt_hex),
    server="rogue.local.",
    addresses=[socket.inet_aton(ip)],
)
try:
    zc.register_service(info, cooperating_responders=True)
    print("registered", flush=True)
    time.sleep(float(seconds))
finally:
    zc.unregister_service(info)
    zc.close()
