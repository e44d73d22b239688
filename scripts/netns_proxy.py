"""An HTTP proxy listening inside a loopback-only network namespace, connecting outside it.

`scripts/fresh_debian_check.sh` runs a fresh Debian in its own network namespace so that it
starts its own RabbitMQ and servers; its apt and pip still need the package mirrors. This proxy
listens on 127.0.0.1:PORT *inside* that namespace and opens its upstream connections in the
namespace it was started in, to the allowed hosts only (CONNECT to port 443, plain HTTP to port
80); anything else is answered 403. A plain-HTTP connection stays bound to the host named by
its first request (apt sends all of its requests for one mirror on one connection).

    python3 scripts/netns_proxy.py --netns NAME [--port 3128] --allow deb.debian.org ...
"""
from __future__ import annotations

import argparse
import ctypes
import os
import selectors
import socket
import sys
import threading
from urllib.parse import urlsplit

CLONE_NEWNET = 0x40000000
HEAD_LIMIT = 64 * 1024          # bytes of request head read before the upstream is chosen
CHUNK = 64 * 1024
CONNECT_TIMEOUT = 30
IDLE_TIMEOUT = 300              # seconds a relayed connection may stay silent
MAX_CONNECTIONS = 64


def setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


def listen_in(netns: str, port: int) -> socket.socket:
    """A listening socket created inside `netns`; this thread then returns to its own netns."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        setns(target)
        try:
            server = socket.create_server(("127.0.0.1", port))
        finally:
            setns(home)
    finally:
        os.close(home)
        os.close(target)
    return server


def read_head(client: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(CHUNK)
        if not chunk:
            raise ConnectionError("closed before the request head ended")
        data += chunk
        if len(data) > HEAD_LIMIT:
            raise ConnectionError("request head too long")
    return data


def upstream_of(head: bytes) -> tuple[str, int, bool]:
    """(host, port, is_connect) named by the first request line."""
    method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        return host, int(port), True
    url = urlsplit(target)
    if url.scheme != "http" or not url.hostname:
        raise ValueError(f"not a proxy request: {target[:100]}")
    return url.hostname, url.port or 80, False


def relay(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until either side closes or both stay silent for IDLE_TIMEOUT."""
    with selectors.DefaultSelector() as selector:
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        while True:
            ready = selector.select(IDLE_TIMEOUT)
            if not ready:
                return
            for key, _ in ready:
                data = key.fileobj.recv(CHUNK)
                if not data:
                    return
                key.data.sendall(data)


def serve(client: socket.socket, allowed: set[str], slots: threading.Semaphore) -> None:
    try:
        client.settimeout(CONNECT_TIMEOUT)
        head = read_head(client)
        host, port, is_connect = upstream_of(head)
        if host not in allowed or port != (443 if is_connect else 80):
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            print(f"netns_proxy: refused {host}:{port}", file=sys.stderr, flush=True)
            return
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as upstream:
            if is_connect:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.sendall(head)
            client.settimeout(None)
            upstream.settimeout(None)
            relay(client, upstream)
    except (OSError, ValueError) as exc:
        print(f"netns_proxy: {exc!r}", file=sys.stderr, flush=True)
    finally:
        client.close()
        slots.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--netns", required=True, help="name under /run/netns to listen in")
    parser.add_argument("--port", type=int, default=3128)
    parser.add_argument("--allow", nargs="+", required=True, help="host names to connect to")
    args = parser.parse_args()
    server = listen_in(args.netns, args.port)
    print(f"netns_proxy: listening on 127.0.0.1:{args.port} in {args.netns}",
          file=sys.stderr, flush=True)
    slots = threading.Semaphore(MAX_CONNECTIONS)
    allowed = set(args.allow)
    while True:
        client, _ = server.accept()
        slots.acquire()
        threading.Thread(target=serve, args=(client, allowed, slots), daemon=True).start()


if __name__ == "__main__":
    main()
