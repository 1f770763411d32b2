"""The VM's one network path: QEMU's ``guestfwd=...-cmd:`` runs this once per guest TCP
connection to the forwarded address, with the connection on stdin/stdout; it relays the bytes
to ``127.0.0.1:PORT`` (the broker) and nothing else. Standard library only, so that it starts
in tens of milliseconds.

Usage (by QEMU, not by hand): ``python -m custodes.vm.relay PORT``
"""

from __future__ import annotations

import os
import selectors
import socket
import sys

_CHUNK = 65536


def relay(port: int) -> None:
    upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
    upstream.settimeout(None)
    guest_in, guest_out = sys.stdin.fileno(), sys.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(guest_in, selectors.EVENT_READ, "guest")
    selector.register(upstream, selectors.EVENT_READ, "broker")
    open_sides = 2
    while open_sides:
        for key, _ in selector.select():
            if key.data == "guest":
                data = os.read(guest_in, _CHUNK)
                if data:
                    upstream.sendall(data)
                    continue
                selector.unregister(guest_in)
                upstream.shutdown(socket.SHUT_WR)
            else:
                data = upstream.recv(_CHUNK)
                if data:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(guest_out, view) :]
                    continue
                selector.unregister(upstream)
                open_sides = 1  # the broker closed: nothing more can come back
                selector.close()
                return
            open_sides -= 1


def main() -> int:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: python -m custodes.vm.relay PORT", file=sys.stderr)
        return 2
    try:
        relay(int(sys.argv[1]))
    except OSError as e:
        print(f"custodes vm relay: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
