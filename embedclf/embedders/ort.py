"""ONNX Runtime adapter: a sentence-transformers model exported by :mod:`embedclf.embedders.onnx_build`.

Spec: ``onnx:TARGET?quant=none|int8|int8w&threads=N&lanes=N&batch_size=N&normalize=0|1&spin=0|1|run``
where TARGET is what ``st:`` takes, but local only (``pip:PACKAGE`` or a directory). Aliases: ``minilm-onnx`` (fp32),
``minilm-int8`` and ``minilm-int8w``. ``st:TARGET?backend=onnx`` is the same as ``onnx:TARGET``.

The graph returns pooled vectors; this module tokenizes (the model's own ``tokenizer.json``,
truncated at its ``max_seq_length``), pads each sub-batch to its longest text and L2-normalises.

Defaults (measured on 2 cores, docs/embedders.md "Lanes and sub-batches"): texts sorted by length go
through the model in **sub-batches of 4**, of 1 for int8 (a sub-batch of 64 short texts padded to its
longest one spent most of its time on padding: 2.2x slower; an int8 run's activations share one
quantisation scale, so alone a text's vector is its own) on **one lane per core**: each lane is a thread running its own
sub-batches with one intra-op thread, so no operator waits for another core (1.15-1.25x the texts/s of
one run with two intra-op threads). ``threads=0`` alone means ONNX Runtime's own threading (one lane,
one intra-op thread per core).

``model_id`` (measured with ``scripts/embedder_agreement.py`` on all 10,003 BANKING77 training
texts): fp32 vectors are the torch model's (minimum cosine 1.000000 to six decimals) and int8w's
are interchangeable with them (minimum 0.99951), so both keep the torch id (``st:all-MiniLM-L6-v2``)
and heads and cached vectors carry over. int8 vectors differ (mean 0.9933, minimum 0.9722):
``+int8`` is appended, and a head trained on the torch model is refused by an int8 worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedclf.embedders.base import Embedder, TokenMemo, l2_normalize, model_starting
from embedclf.embedders.chunkids import ChunkIds, Chunks
from embedclf.embedders.options import check_options, parse_bool, parse_int
from embedclf.embedders.spec import EmbedderSpec, SpecError

ONNX_OPTIONS = ("quant", "threads", "batch_size", "normalize", "spin", "lanes")
#: vectors interchangeable with torch's (cosine >= 0.999 on every one of 10,003 BANKING77 texts) keep its id
MODEL_ID_SUFFIX = {"none": "", "int8": "+int8", "int8w": ""}
#: texts per model run: sorted by length, a few texts at a time carry almost no padding. int8 quantises each
#: run's activations with one scale, so it runs one text at a time: a text's vector is then its own, whatever
#: batch it came in (a worker's labels equal the offline pipeline's), for ~7 % of its speed
DEFAULT_SUB_BATCH = {"none": 4, "int8w": 4, "int8": 1}
#: texts per ``embed_batch`` call when :meth:`Embedder.embed` embeds a whole file (training, evaluation): many
#: runs, so every lane has work (with one call per run, as until 2026-12-04, ``embed`` ran on one lane only)
EMBED_CALL_TEXTS = 256


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; os.cpu_count() where that is unknown)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parse_spin(value: bool | str) -> str:
    """The ``spin`` option: a boolean (``1``/``0``, ``true``/``false``...) or ``run``; returns ``"1"``, ``"0"`` or
    ``"run"``."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if str(value).strip().lower() == "run":
        return "run"
    try:
        return "1" if parse_bool("spin", value) else "0"
    except SpecError:
        raise SpecError(f"onnx option spin={value!r} is not 1, 0 or run") from None


class _Shared:
    """An iterator several threads may draw from: each item goes to exactly one of them."""

    def __init__(self, items: Sequence) -> None:
        self._items = iter(items)
        self._lock = threading.Lock()

    def __iter__(self) -> _Shared:
        return self

    def __next__(self):
        with self._lock:
            return next(self._items)


class OnnxEmbedder(Embedder):
    """Embeds with ONNX Runtime on the CPU; ``threads`` (intra-op, per lane), ``lanes`` (runs at once) and
    the spec's ``batch_size`` (texts per run: :attr:`run_size`) don't change ``model_id``."""

    signals_model_start = True

    def __init__(self, target: str, quant: str = "none", threads: int = 1, batch_size: int | None = None,
                 normalize: bool = True, model_dir: str | Path | None = None, log: Callable[[str], None] | None = None,
                 spin: bool | str = True, lanes: int = 0) -> None:
        from embedclf.embedders.onnx_build import QUANTS, ensure_built, read_source

        if quant not in QUANTS:
            raise SpecError(f"onnx option quant={quant!r} is not one of {', '.join(QUANTS)}")
        batch_size = DEFAULT_SUB_BATCH.get(quant, 4) if batch_size is None else batch_size
        if batch_size < 1:
            raise SpecError("onnx option batch_size must be >= 1")
        if threads < 0:
            raise SpecError("onnx option threads must be >= 0 (0: ONNX Runtime's default, one per core)")
        if threads == 0 and lanes > 1:
            raise SpecError("onnx option threads=0 (one intra-op thread per core) takes one lane: set threads=N")
        if lanes < 0:
            raise SpecError("onnx option lanes must be >= 0 (0: one per core with threads=1, else 1)")
        self.source = read_source(target)
        self.path = ensure_built(self.source, quant, model_dir, log=log)
        self.quant = quant
        self.threads = threads
        #: texts per model run (the spec's ``batch_size``)
        self.run_size = batch_size
        #: texts per ``embed_batch`` call in :meth:`embed`: enough runs for every lane
        self.batch_size = EMBED_CALL_TEXTS
        self.lanes = lanes or (available_cores() if threads == 1 else 1)
        self._pool: Any = None
        #: "1": ONNX Runtime's default (idle intra-op threads spin, also for a while after a run);
        #: "0": they never spin; "run": they spin while a run lasts and stop when it ends
        self.spin = parse_spin(spin)
        self.normalize = normalize or self.source.normalize
        self.model_id = f"st:{self.source.name}" + MODEL_ID_SUFFIX[quant] + ("" if self.normalize else "+nonorm")
        #: every word's token ids, learned by any of this embedder's tokenizers (:mod:`embedclf.embedders.chunkids`)
        self._chunks = Chunks()
        self._tokenizer = ChunkIds(self._new_tokenizer(), self._chunks)
        self._counter = ChunkIds(self._new_tokenizer(), self._chunks)  # count_tokens: not embed_batch's thread
        #: ids counted by a token_counter() on another thread, taken by embed_batch
        self._memo: TokenMemo[np.ndarray] = TokenMemo()
        self._session: Any = self._new_session()
        self.dim = int(self._session.get_outputs()[0].shape[-1])

    @classmethod
    def from_spec(cls, spec: EmbedderSpec, *, model_dir: str | Path | None = None,
                  drop: Sequence[str] = ()) -> OnnxEmbedder:
        opts = {k: v for k, v in spec.options.items() if k not in drop}
        check_options(opts, ONNX_OPTIONS, "onnx")
        kwargs: dict[str, Any] = {}
        if "quant" in opts:
            kwargs["quant"] = opts["quant"].strip().lower()
        for key in ("threads", "batch_size", "lanes"):
            if key in opts:
                kwargs[key] = parse_int(key, opts[key])
        if "normalize" in opts:
            kwargs["normalize"] = parse_bool("normalize", opts["normalize"])
        if "spin" in opts:
            kwargs["spin"] = parse_spin(opts["spin"])
        return cls(spec.target, model_dir=model_dir, **kwargs)

    def _new_tokenizer(self):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.source.tokenizer_file))
        tok.enable_truncation(self.source.max_seq_length)
        tok.no_padding()  # each sub-batch is padded here, to its own longest text
        return tok

    def _new_session(self):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        if self.spin == "0":  # idle intra-op threads sleep instead of spinning (frees the cores for other threads)
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        elif self.spin == "run":  # spin between a run's operators, stop as soon as the run ends
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])

    @property
    def session(self) -> Any:
        if self._session is None:
            raise RuntimeError("embedder is closed")
        return self._session

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Sorted by length into runs of :attr:`run_size` texts (as sentence-transformers does), rows in input order.

        Texts a :meth:`token_counter` counted are not tokenized again (their ids wait in the memo). Every
        sub-batch's inputs are built here, before the model runs: a lane then only runs the model, one
        sub-batch after another (numpy work between two runs, with the caches cold after the model, cost
        ~30 us a text: 2-3 % of the int8 model's time on 2 cores)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        session = self.session
        known = [self._memo.take(t) for t in texts]
        todo = [i for i, ids in enumerate(known) if ids is None]
        fresh = iter(self._tokenizer.ids_batch([texts[i] for i in todo]) if todo else ())
        seqs: list[Sequence[int] | np.ndarray] = [next(fresh) if ids is None else ids for ids in known]
        order = sorted(range(len(texts)), key=lambda i: -len(seqs[i]))
        jobs = [(idx, self._feed([seqs[i] for i in idx]))
                for idx in (order[s : s + self.run_size] for s in range(0, len(order), self.run_size))]
        outputs = [o.name for o in session.get_outputs()[:1]]
        jobs_left = _Shared(jobs)

        def lane() -> list[tuple[list[int], np.ndarray]]:
            done = []
            for idx, feed in jobs_left:
                done.append((idx, session.run(outputs, feed)[0]))
            return done

        lanes = 1 if self.lanes == 1 or len(jobs) <= 1 else self.lanes
        model_starting()
        for done in self._on_lanes(lane, lanes):
            if done:
                idx = [i for ix, _ in done for i in ix]
                out[idx] = np.concatenate([v for _, v in done])
        return l2_normalize(out) if self.normalize else out

    def _feed(self, seqs: list[Sequence[int] | np.ndarray]) -> dict[str, np.ndarray]:
        """The model's inputs for one sub-batch: ids padded to its longest text, and the attention mask."""
        width = max(len(s) for s in seqs)
        if len(seqs) == 1:
            ids = np.asarray(seqs[0], dtype=np.int64).reshape(1, width)
            return {"input_ids": ids, "attention_mask": np.ones((1, width), dtype=np.int64)}
        ids = np.full((len(seqs), width), self.source.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def _on_lanes(self, lane: Callable[[], list], lanes: int) -> list[list]:
        """``lane()`` on ``lanes`` threads at once, this one included; each returns what it ran. The lanes take
        the sub-batches in turn (longest first, so they finish close together); the sub-batches are those of one
        lane (:attr:`run_size` texts), so a text's vector never depends on how many cores the host has."""
        if lanes == 1:
            return [lane()]
        from concurrent.futures import ThreadPoolExecutor

        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.lanes - 1, thread_name_prefix="embedclf-lane")
        others = [self._pool.submit(lane) for _ in range(lanes - 1)]
        try:
            mine = lane()
        finally:
            results = [f.result() for f in others]
        return [mine, *results]

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees, special tokens included, capped at ``max_seq_length``."""
        return len(self._counter.ids(text))

    def token_counter(self) -> Callable[[str], int]:
        """Counts with a private tokenizer (one Rust tokenizer used by two threads raises "Already borrowed"),
        and keeps the ids for :meth:`embed_batch` (:class:`TokenMemo`): a worker's texts are tokenized once,
        on its receive thread, into the int64 array the model takes (not converted again on the batch thread)."""
        tok = ChunkIds(self._new_tokenizer(), self._chunks)
        memo = self._memo
        return lambda text: len(memo.put(text, np.asarray(tok.ids(text), dtype=np.int64)))

    def max_tokens_per_text(self) -> int:
        return self.source.max_seq_length

    def close(self) -> None:
        self._session = None
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
