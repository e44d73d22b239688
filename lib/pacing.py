"""How long a client may hold a server thread: heads are read by the poller, bodies at a pace.

gunicorn's gthread worker hands a connection to one of its few threads (``THREADS`` per
worker) as soon as a byte arrives and then reads the request head and body with blocking
reads and no time limit, so a few dozen clients that trickle their headers or bodies hold
every thread and nobody else is answered (issue 11.3).  :class:`PacedWorker` changes two
things and nothing else:

* **Request heads are read by the worker's poller**, the one that already watches idle
  keep-alive connections: a connection gets a thread only once its whole head (request line
  and headers, up to :data:`MAX_HEAD` bytes) has arrived, and is closed when that takes more
  than ``CLIENT_TIMEOUT`` seconds.  A head trickling in costs a file descriptor, not a thread,
  so hundreds of them (up to gunicorn's ``worker_connections``) deny nothing.
* **A body must keep a minimum pace**: by ``CLIENT_TIMEOUT`` seconds after its request got a
  thread, plus one second per ``CLIENT_MIN_RATE`` bytes received, the next bytes must have
  arrived, or the read fails (a socket timeout: the request is the client's failure, as when
  it hangs up).  This bounds the time a trickling body holds a thread, the way Apache's
  mod_reqtimeout does; a body at or above the rate holds its thread as long as it lasts, so
  ``THREADS`` is the number of slow-but-honest uploads served at once.

Data servers run with no body pace (``min_rate`` 0): their bodies come from cluster members
relaying a client at the client's own pace, and a stranger's request is refused before its
body is read (``refuse_body`` shuts the read side, so gunicorn does not drain it).
"""
from __future__ import annotations

import collections
import errno
import selectors
import socket
import time
from functools import partial

from gunicorn.workers.gthread import TConn, ThreadWorker

#: Largest request head read by the poller; a longer one goes to the parser, which refuses it.
MAX_HEAD = 256 * 1024
_RECV = 64 * 1024


class PacedSocket:
    """A connection's socket whose blocking reads meet a deadline that a request's bytes
    push back (one second per ``min_rate`` bytes); everything else is the socket's."""

    def __init__(self, sock: socket.socket, timeout: float, min_rate: float):
        self._sock = sock
        self._timeout = timeout
        self._min_rate = min_rate
        self._deadline: float | None = None

    def __getattr__(self, name: str):
        return getattr(self._sock, name)

    def start_request(self) -> None:
        """A request got a thread: its body's pace counts from now."""
        self._deadline = time.monotonic() + self._timeout if self._min_rate else None

    def idle(self) -> None:
        """Back to the poller: reads are non-blocking and unpaced again."""
        self._deadline = None

    def recv(self, size: int, *flags) -> bytes:
        if self._deadline is None:
            return self._sock.recv(size, *flags)
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout(f"request body slower than {self._min_rate:.0f} B/s")
        self._sock.settimeout(left)
        try:
            data = self._sock.recv(size, *flags)
        finally:
            self._sock.settimeout(None)
        self._deadline += len(data) / self._min_rate
        return data


def paced_worker(timeout: float, min_rate: float) -> type:
    """A gthread worker class with these limits (gunicorn takes a class as worker_class)."""
    return type("PacedWorker", (PacedWorker,), {"head_timeout": timeout, "min_rate": min_rate})


class PacedWorker(ThreadWorker):
    head_timeout = 10.0
    min_rate = 0.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: Connections whose head the poller is reading, oldest first.
        self._heads: collections.deque = collections.deque()

    def accept(self, listener) -> None:
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, PacedSocket(sock, self.head_timeout, self.min_rate), client,
                     listener.getsockname())
        self._await_head(conn)

    def on_client_socket_readable(self, conn, client) -> None:
        """A kept-alive connection woke up: its next head is read by the poller too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_head(conn)

    def _await_head(self, conn) -> None:
        """Take what has arrived at once (a kept-alive connection's next request usually has,
        whole: it then goes to a thread without another turn of the poller); else watch it."""
        conn.sock.idle()
        conn.sock.setblocking(False)
        conn.head = bytearray()
        conn.head_deadline = time.monotonic() + self.head_timeout
        if not self._take_head(conn):
            self._heads.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ,
                                 partial(self._read_head, conn))

    def _read_head(self, conn, _sock) -> None:
        if self._take_head(conn, watched=True):
            self._heads.remove(conn)

    def _take_head(self, conn, watched: bool = False) -> bool:
        """Read what has arrived; True when the connection is done with the poller: its head
        is complete (handed to a thread) or it was closed."""
        try:
            data = conn.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if data:
            conn.head += data
            if b"\r\n\r\n" not in conn.head and b"\n\n" not in conn.head \
                    and len(conn.head) <= MAX_HEAD:
                return False
        if watched:
            self.poller.unregister(conn.sock)
        if data:
            conn.data_ready = True
            self.enqueue_req(conn)
        else:
            self.nr_conns -= 1
            conn.close()
        return True

    def _drop_head(self, conn) -> None:
        self.poller.unregister(conn.sock)
        self._heads.remove(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Also close the connections whose head took longer than ``head_timeout``."""
        super().murder_pending()
        now = time.monotonic()
        while self._heads and self._heads[0].head_deadline <= now:
            self._drop_head(self._heads[0])

    def handle(self, conn):
        """Give the parser the head the poller read; the body's pace counts from here."""
        head, conn.head = bytes(conn.head), bytearray()
        if head:
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(head)
        conn.sock.start_request()
        return super().handle(conn)


def shutdown_client(environ: dict, how: int) -> None:
    """Shut the client's connection (gunicorn's socket) down in direction ``how``; a socket
    already gone is no error."""
    sock = environ.get("gunicorn.socket")
    if sock is not None:
        try:
            sock.shutdown(how)
        except OSError:
            pass


def refuse_body(environ: dict) -> None:
    """Read no more of this request: shut the socket's read side, so that gunicorn closes the
    connection instead of draining a refused body at the sender's pace."""
    shutdown_client(environ, socket.SHUT_RD)
