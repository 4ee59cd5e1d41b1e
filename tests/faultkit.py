"""Fault-injection helpers for the fault tests: a cuttable TCP proxy and a Redis MONITOR batch tracker.

``TcpProxy`` forwards a local port to a server (Postgres here). ``cut()`` closes
its listener and every open connection, so clients get "connection refused"
and broken sockets, exactly like a database host that went away; ``restore()``
listens again on the same port.

``BatchTracker`` follows the workers' attempt counters (``worker/attempts.py``)
through Redis MONITOR: a worker counts ``INCR embedclf:attempts:<id>`` for every
task of a batch *before* processing it, and ``DEL``s the keys after the rows are
committed (``DECR`` when it gives the attempt back). So task ids INCRed over a
connection and not yet DELed/DECRed (over any connection) mean that the worker
owning the connection is inside a batch. The tracker also counts INCRs per task id: how many times each task was
taken up for processing, and which tasks a worker recorded as received
(kombu's ``HSET unacked``).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections import Counter

ATTEMPT_PREFIX = "embedclf:attempts:"
TASK_ID = re.compile(r'"id": "([^"]+)"')


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
            except socket.timeout:
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


class BatchTracker:
    """Watch MONITOR on a Redis server; reconnects across Redis restarts."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lock = threading.Lock()
        self.inflight: dict[int, set[str]] = {}  # client port of the INCRs -> task ids not yet done/undone
        self.begins: Counter[str] = Counter()  # task id -> INCRs (times taken up for processing)
        self.undone: set[str] = set()  # tasks whose attempt was given back (database unreachable)
        self.registered: set[str] = set()  # tasks a worker received and recorded as unacked
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not getattr(self, "_listening", False):
            if time.monotonic() > deadline:
                raise AssertionError("MONITOR did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        import redis

        while not self._stop.is_set():
            try:
                client = redis.Redis(port=self.port, socket_connect_timeout=1)
                with client.monitor() as m:
                    self._listening = True
                    while not self._stop.is_set():
                        self._on(m.next_command())
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                time.sleep(0.1)  # Redis restarting: commands in this gap are not seen

    def _on(self, cmd: dict | None) -> None:
        if not cmd or cmd.get("client_type") != "tcp" or not cmd.get("command"):
            return
        verb, *args = cmd["command"].split(" ")
        if verb.upper() == "HSET" and args[:1] == ["unacked"]:
            # kombu records a message it received (BRPOP) as unacked: [message, exchange, routing key]
            with self.lock:
                self.registered.update(TASK_ID.findall(cmd["command"]))
            return
        ids = [a[len(ATTEMPT_PREFIX):] for a in args if a.startswith(ATTEMPT_PREFIX)]
        if not ids:
            return
        port = int(cmd["client_port"])
        verb = verb.upper()
        with self.lock:
            if verb in ("INCR", "INCRBY"):  # redis-py 8 sends INCR as INCRBY key 1
                self.inflight.setdefault(port, set()).update(ids)
                self.begins.update(ids)
            elif verb in ("DEL", "DECR", "DECRBY"):
                # done/undo may come over another pooled connection of the same worker (another thread)
                for open_ids in self.inflight.values():
                    open_ids.difference_update(ids)
                if verb != "DEL":
                    self.undone.update(ids)

    def forget(self, client_port: int) -> set[str]:
        """Drop (and return) the batch of a connection whose worker was killed."""
        with self.lock:
            return self.inflight.pop(client_port, set())

    def busy(self) -> dict[int, set[str]]:
        """Client port -> ids of the batch it is processing now."""
        with self.lock:
            return {p: set(ids) for p, ids in self.inflight.items() if ids}


def pid_of_client_port(client_port: int, server_port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` owns the TCP connection 127.0.0.1:client_port -> :server_port (via /proc)."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote = f[1], f[2]
            if int(local.rsplit(":", 1)[1], 16) == client_port and int(remote.rsplit(":", 1)[1], 16) == server_port:
                inode = f[9]
                break
        if inode:
            break
    if not inode:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
        except OSError:
            continue
    return None
