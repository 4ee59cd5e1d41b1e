"""The llama.cpp path end to end: a worker running the Gemma GGUF, token-aware batches."""

from __future__ import annotations

import collections
import time

import pytest

from embedclf.data import load_labeled
from embedclf.demo import HOLDOUT_CSV, TRAIN_CSV
from embedclf.embedders.spec import load_embedder
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.store import repository as repo
from embedclf.training.trainer import TrainParams, train_head
from tests.conftest import settings_env
from tests.helpers import produce, wait_rows

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.llama, pytest.mark.postgres, pytest.mark.redis]


def test_gemma_worker_token_aware_batches(settings, engine, start_worker, tmp_path):
    gemma = load_embedder("gemma3-270m")
    train = load_labeled(TRAIN_CSV)
    result = train_head(gemma.embed(train.texts), train.labels, TrainParams(epochs=60))
    repo.add_head_version(engine, "support-gemma", HeadArtifact.from_head(result.head, result.labels, gemma.model_id))
    # a head that was trained on MiniLM vectors (384-d): this worker must refuse it, not misuse it
    minilm_head = MLPHead(HeadConfig(input_dim=384, num_labels=2, hidden_dim=8))
    repo.add_head_version(engine, "minilm-only", HeadArtifact.from_head(minilm_head, ["a", "b"], "st:all-MiniLM-L6-v2"))

    holdout = load_labeled(HOLDOUT_CSV)
    texts, labels = holdout.texts[:48], holdout.labels[:48]
    tokens = {t: gemma.count_tokens(t) for t in texts}
    offline = result.head.predict_proba(gemma.embed(texts))
    gemma.close()

    budget = 128
    env = settings_env(settings, EMBEDCLF_EMBEDDER="gemma3-270m", EMBEDCLF_BATCH_MAX_SIZE="64",
                       EMBEDCLF_BATCH_MAX_TOKENS=str(budget), EMBEDCLF_BATCH_MAX_WAIT_MS="2000")
    worker = start_worker(env, name="w-gemma")
    worker.wait_ready()
    tasks = [{"id": f"g-{i}", "kwargs": {"head": "support-gemma", "text": t}} for i, t in enumerate(texts)]
    tasks.append({"id": "g-minilm-head", "kwargs": {"head": "minilm-only", "text": "refund please"}})
    t0 = time.monotonic()
    produce(settings.broker_url, tasks, tmp_path)
    rows = wait_rows(engine, [t["id"] for t in tasks], worker, timeout=400)
    elapsed = time.monotonic() - t0

    ok = [rows[f"g-{i}"] for i in range(len(texts))]
    assert all(r["status"] == "ok" and r["embedder_id"] == "llama:gemma-3-270m-q4_k_m.gguf:mean:norm" for r in ok)
    accuracy = sum(r["label"] == y for r, y in zip(ok, labels)) / len(labels)
    assert accuracy >= 0.7, accuracy
    agree = sum(r["label"] == result.labels[int(p.argmax())] for r, p in zip(ok, offline)) / len(ok)
    assert agree >= 0.95, f"worker vs offline labels agree on {agree:.2f}"

    # batches were cut by the token budget, not the count: no batch went far past it
    per_batch = collections.defaultdict(int)
    for r in ok:
        per_batch[r["completed_at"]] += tokens[r["text"]]
    longest = max(tokens.values())
    assert len(per_batch) >= sum(tokens.values()) // (budget + longest)
    assert max(per_batch.values()) < budget + longest
    assert max(per_batch.values()) >= budget // 2  # and they were real batches

    # a head trained on another embedder is refused with a clear error
    refused = rows["g-minilm-head"]
    assert refused["status"] == "error"
    assert "'st:all-MiniLM-L6-v2'" in refused["error"]
    assert "'llama:gemma-3-270m-q4_k_m.gguf:mean:norm'" in refused["error"]
    print(f"\ngemma e2e: {len(texts)} texts in {elapsed:.1f}s, {len(per_batch)} batches, "
          f"tokens/batch {sorted(per_batch.values())}, accuracy {accuracy:.3f}, agreement {agree:.3f}")
