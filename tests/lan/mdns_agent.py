"""An attacker's mDNS socket, run inside a LAN host (never in the root namespace):

    python3 mdns_agent.py IP [--capture]

Binds UDP port 5353 (shared, as mDNS responders do) on the host, joins
224.0.0.251 on IP and prints "ready". Each line "tx HEX" on stdin is one datagram (also an
empty one), sent as is to 224.0.0.251:5353 from port 5353 out of IP; "sent N"
(or "error ...") follows each. With --capture, every datagram heard is printed as
"rx SOURCE HEX". Ends at the end of stdin.
"""

import socket
import sys
import threading

GROUP, PORT = "224.0.0.251", 5353

ip = sys.argv[1]
capture = "--capture" in sys.argv[2:]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
sock.bind(("", PORT))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(GROUP) + socket.inet_aton(ip))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ip))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
lock = threading.Lock()


def say(text: str) -> None:
    with lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def listen() -> None:
    while True:
        data, (source, _) = sock.recvfrom(65535)
        if source != ip:
            say(f"rx {source} {data.hex()}")


if capture:
    threading.Thread(target=listen, daemon=True).start()
say("ready")
for line in sys.stdin:
    if not line.startswith("tx "):
        continue
    try:
        say(f"sent {sock.sendto(bytes.fromhex(line[3:].strip()), (GROUP, PORT))}")
    except (OSError, ValueError) as e:
        say(f"error {e}")
