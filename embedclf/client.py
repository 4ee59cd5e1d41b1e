"""Producer helper: enqueue classify tasks with nothing but Celery and JSON.

Equivalent to ``Celery(broker=URL).send_task("embedclf.classify", kwargs={...})``;
this helper adds ``enqueued_at`` (for latency figures), reuses one producer
connection for bulk sends, and returns the task ids (the ``task_id`` of each
result row).
"""

from __future__ import annotations

import time
import uuid
from typing import Callable, Iterable, Sequence

from celery import Celery

from embedclf.payload import TASK_NAME


class Client:
    def __init__(self, broker_url: str, queue: str = "celery") -> None:
        self.queue = queue
        self.app = Celery("embedclf-client", broker=broker_url, set_as_current=False)
        self.app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True)

    def classify(self, head: str, text: str, request_id: str | None = None, task_id: str | None = None) -> str:
        """Enqueue one text; returns its task id."""
        return self.classify_many(head, [text], [request_id], [task_id] if task_id else None)[0]

    def classify_many(
        self,
        head: str,
        texts: Sequence[object],
        request_ids: Sequence[str | None] | None = None,
        task_ids: Sequence[str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Enqueue many texts over one connection; returns their task ids in order."""
        ids = list(task_ids) if task_ids is not None else [str(uuid.uuid4()) for _ in texts]
        rids: Iterable[str | None] = request_ids if request_ids is not None else [None] * len(texts)
        with self.app.producer_or_acquire() as producer:
            for n, (tid, text, rid) in enumerate(zip(ids, texts, rids), 1):
                kwargs: dict = {"head": head, "text": text, "enqueued_at": time.time()}
                if rid is not None:
                    kwargs["request_id"] = rid
                self.app.send_task(TASK_NAME, kwargs=kwargs, task_id=tid, queue=self.queue, producer=producer)
                if progress is not None and (n % 100 == 0 or n == len(ids)):
                    progress(100 if n % 100 == 0 else n % 100)
        return ids

    def queue_depth(self) -> int:
        with self.app.connection_for_write() as conn:
            return conn.default_channel.client.llen(self.queue)

    def close(self) -> None:
        self.app.close()
