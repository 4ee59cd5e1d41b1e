"""Embed once, apply heads, produce result rows. Pure: no I/O.

Given a batch of validated requests, a loaded embedder and a snapshot of the
active heads, return one row per (request, head it names): ``ok`` with label,
score and top-3, or ``error`` with a clear message. A text is embedded once per
batch however many heads or tasks ask for it. A batch never mixes head versions: the
caller passes one snapshot for the whole batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from embedclf.embedders.base import Embedder
from embedclf.heads.mlp import MLPHead, top_k
from embedclf.payload import ClassifyRequest, clean_str
from embedclf.training.abstain import head_abstain_mask

log = logging.getLogger(__name__)
TOP_K = 3


@dataclass(frozen=True)
class LoadedHead:
    name: str
    version: int
    embedder_id: str
    labels: list[str]
    module: MLPHead


def error_row(task_id: str, message: str, **fields: object) -> dict:
    row: dict = {"task_id": task_id, "status": "error", "error": clean_str(message, 1000)}
    row.update(fields)
    return row


def _request_fields(r: ClassifyRequest, head: str | None = None) -> dict:
    return {"request_id": r.request_id, "head_name": head if head is not None else r.head,
            "enqueued_at": r.enqueued_at}


def embed_isolating(embedder: Embedder, texts: Sequence[str]) -> tuple[np.ndarray, dict[int, str]]:
    """Embed ``texts`` in one call; if that fails, one by one to isolate the culprit.

    Returns the embeddings and ``{index: error message}`` for texts that failed.
    """
    try:
        return np.asarray(embedder.embed_batch(list(texts)), dtype=np.float32), {}
    except Exception as exc:  # noqa: BLE001 - any backend failure is isolated below
        log.warning("batch embedding of %d texts failed (%s); retrying one by one", len(texts), exc)
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    failed: dict[int, str] = {}
    for i, text in enumerate(texts):
        try:
            out[i] = embedder.embed_batch([text])[0]
        except Exception as exc:  # noqa: BLE001
            failed[i] = f"embedding failed: {type(exc).__name__}: {exc}"
    return out, failed


def classify_requests(
    requests: Sequence[ClassifyRequest],
    embedder: Embedder,
    heads: Mapping[str, LoadedHead],
) -> list[dict]:
    """One result row per (request, head it names), in input order then head order.

    Every distinct text of the batch is embedded once, in one call, whatever
    heads ask for it; each head then runs once over its rows.
    """
    pairs = [(i, name) for i, r in enumerate(requests) for name in r.heads]
    rows: list[dict | None] = [None] * len(pairs)
    runnable: list[tuple[int, LoadedHead]] = []  # (pair index, head)
    for p, (i, name) in enumerate(pairs):
        r = requests[i]
        head = heads.get(name)
        if head is None:
            known = ", ".join(sorted(heads)) or "none"
            rows[p] = error_row(r.task_id, f"unknown head {name!r} (active heads: {known})", **_request_fields(r, name))
        elif head.embedder_id != embedder.model_id:
            rows[p] = error_row(
                r.task_id,
                f"head {head.name!r} v{head.version} was trained on embedder {head.embedder_id!r}; "
                f"this worker runs {embedder.model_id!r}",
                **_request_fields(r, name),
                head_version=head.version,
                embedder_id=embedder.model_id,
            )
        else:
            runnable.append((p, head))

    if runnable:
        # embed each distinct text once, whatever heads ask for it
        text_index: dict[str, int] = {}
        for p, _ in runnable:
            text_index.setdefault(requests[pairs[p][0]].text, len(text_index))
        texts = list(text_index)
        vectors, failed = embed_isolating(embedder, texts)
        log.debug("embedded %d distinct texts in one call for %d tasks, %d head rows",
                  len(texts), len({pairs[p][0] for p, _ in runnable}), len(runnable))
        by_head: dict[tuple[str, int], list[int]] = {}
        for p, head in runnable:
            r = requests[pairs[p][0]]
            t = text_index[r.text]
            if t in failed:
                rows[p] = error_row(r.task_id, failed[t], **_request_fields(r, head.name))
            else:
                by_head.setdefault((head.name, head.version), []).append(p)
        for (name, _version), idx in by_head.items():
            head = heads[name]
            proba = head.module.predict_proba(vectors[[text_index[requests[pairs[p][0]].text] for p in idx]])
            abstained = head_abstain_mask(head.module, head.labels, proba)
            for p, best, abst in zip(idx, top_k(proba, head.labels, TOP_K), abstained):
                r = requests[pairs[p][0]]
                rows[p] = {
                    "task_id": r.task_id,
                    "status": "ok",
                    "label": None if abst else best[0][0],  # out of scope: top-3 kept, no label
                    "abstained": bool(abst),
                    "score": best[0][1],
                    "top3": [{"label": lbl, "score": round(score, 6)} for lbl, score in best],
                    "head_version": head.version,
                    "embedder_id": embedder.model_id,
                    "text": r.text,
                    **_request_fields(r, name),
                }
    assert all(row is not None for row in rows)
    return rows  # type: ignore[return-value]
