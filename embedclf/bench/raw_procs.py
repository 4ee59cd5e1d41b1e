"""``bench embed --processes P``: P processes, each with its own copy of an embedder, embed at once.

Every process embeds all N texts in the same chunks; the figure is ``P * N`` texts over the
slowest process's time. That is how P single-threaded workers on one host compare with one
worker using P intra-op threads (``minilm-int8?threads=1&lanes=1`` with ``--processes 2`` against
``minilm-int8?threads=2``). Children are started with ``spawn`` (no forked model state) and
load their model before any timing starts; between runs they wait on a pipe.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence

from embedclf.bench import BenchError
from embedclf.bench.raw import RawRun

LOAD_TIMEOUT_S = 900.0
RUN_TIMEOUT_S = 3600.0


def _child(conn, spec: str, model_dir: str | None, texts: list[str]) -> None:  # pragma: no cover - in a child
    try:
        from embedclf.bench.raw import count_tokens, time_embed
        from embedclf.embedders.spec import load_embedder

        emb = load_embedder(spec, model_dir=model_dir)
        conn.send(("ready", emb.model_id, count_tokens(emb, texts)))
        while (batch_size := conn.recv()) is not None:
            conn.send(("done", time_embed(emb, texts, batch_size)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


class ProcessGroup:
    """P child processes holding the embedder ``spec``; :meth:`measure` times them together."""

    def __init__(self, spec: str, model_dir: str | None, texts: Sequence[str], processes: int) -> None:
        ctx = mp.get_context("spawn")
        self.spec = spec
        self.n = len(texts)
        self.processes = processes
        self._conns = []
        self._procs = []
        try:
            for _ in range(processes):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_child, args=(child, spec, model_dir, list(texts)), daemon=True)
                proc.start()
                self._conns.append(parent)
                self._procs.append(proc)
            ready = [self._recv(c, LOAD_TIMEOUT_S) for c in self._conns]
        except BaseException:
            self.close()
            raise
        self.model_id: str = ready[0][1]
        self.tokens: int | None = ready[0][2]

    def _recv(self, conn, timeout: float):
        if not conn.poll(timeout):
            raise BenchError(f"{self.spec}: a benchmark process gave no answer in {timeout:.0f}s")
        try:
            msg = conn.recv()
        except EOFError:
            raise BenchError(f"{self.spec}: a benchmark process died") from None
        if msg[0] == "error":
            raise BenchError(f"{self.spec}: {msg[1]}")
        return msg

    def measure(self, batch_size: int, label: str = "") -> RawRun:
        for c in self._conns:
            c.send(batch_size)
        seconds = max(self._recv(c, RUN_TIMEOUT_S)[1] for c in self._conns)
        tokens = None if self.tokens is None else self.tokens * self.processes
        return RawRun(batch_size, self.n * self.processes, seconds, tokens, processes=self.processes)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for c in self._conns:
            try:
                c.send(None)
            except (OSError, BrokenPipeError):
                pass
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
