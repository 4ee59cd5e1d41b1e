"""Fault-injection helpers: a cuttable TCP proxy, and finding a worker that is inside a batch.

``TcpProxy`` forwards a local port to a server (Postgres here). ``cut()`` closes
its listener and every open connection, so clients get "connection refused"
and broken sockets, exactly like a database host that went away; ``restore()``
listens again on the same port.

``busy_batch`` finds a worker inside a batch from what workers keep in Redis
(``worker/inflight.py``): a worker writes the tags of the batch it is about to embed to its
*busy* key, and its registry entry names its pid; the tags name messages in its in-flight hash.
"""

from __future__ import annotations

import json
import socket
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._up = threading.Event()
        self.connections = 0

    def start(self) -> None:
        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", self.port))
        lsock.listen(128)
        lsock.settimeout(0.1)
        self._listener = lsock
        self._up.set()
        threading.Thread(target=self._accept, args=(lsock,), daemon=True).start()

    restore = start

    def cut(self) -> None:
        """Stop listening and break every open connection (both directions)."""
        self._up.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            socks, self._socks = self._socks, set()
        for s in socks:
            _close(s)

    stop = cut

    def _accept(self, lsock: socket.socket) -> None:
        while self._up.is_set() and lsock is self._listener:
            try:
                client, _ = lsock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if not self._up.is_set():
                    _close(client), _close(upstream)
                    continue
                self._socks |= {client, upstream}
                self.connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._socks -= {src, dst}
            _close(src)
            _close(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


def busy_batch(client, pids: set[int]) -> tuple[int, str, set[str]] | None:
    """(pid, busy marker, task ids) of a worker among ``pids`` that is embedding a batch now, or None."""
    from embedclf.envelope import decode
    from worker.inflight import PREFIX, REGISTRY

    for key in client.scan_iter(PREFIX + "w:*:busy"):
        wid = key.decode()[len(PREFIX + "w:"):-len(":busy")]
        info = client.hget(REGISTRY, wid)
        marker = client.get(key)
        if info is None or marker is None or json.loads(info)["pid"] not in pids:
            continue
        raws = client.hmget(f"{PREFIX}w:{wid}:inflight", marker.decode().split(","))
        ids = {decode(raw, 1 << 30).task_id for raw in raws if raw}
        if ids:
            return json.loads(info)["pid"], marker.decode(), ids
    return None
