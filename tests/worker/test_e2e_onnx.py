"""The ONNX Runtime embedders end to end: producer -> Redis -> `celery -A worker.app worker` -> ONNX MiniLM -> Postgres.

* ``minilm-int8``: a head trained on int8 vectors serves held-out texts; a head trained on torch MiniLM is
  refused with the usual mismatch error row (int8 vectors are not torch vectors).
* ``minilm-onnx`` (fp32) and ``minilm-int8w`` keep the torch model's id, so a head trained on torch MiniLM is
  served; fp32 answers equal the offline torch pipeline's, int8w's nearly.
"""

from __future__ import annotations

import pytest

from embedclf.data import load_labeled
from embedclf.demo import HOLDOUT_CSV, TRAIN_CSV
from embedclf.embedders.spec import load_embedder
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.store import repository as repo
from embedclf.training.trainer import TrainParams, train_head
from tests.conftest import settings_env
from tests.helpers import produce, wait_rows

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

INT8_ID = "st:all-MiniLM-L6-v2+int8"
TORCH_ID = "st:all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def heads(engine, minilm):
    """``onnx-int8`` trained on int8 vectors, ``onnx-torch`` on torch MiniLM's (names no other test uses)."""
    train = load_labeled(TRAIN_CSV)
    int8 = load_embedder("minilm-int8")
    try:
        assert int8.model_id == INT8_ID
        r8 = train_head(int8.embed(train.texts), train.labels, TrainParams(epochs=40))
        offline8 = r8.head.predict_proba(int8.embed(load_labeled(HOLDOUT_CSV).texts))
    finally:
        int8.close()
    rt = train_head(minilm.embed(train.texts), train.labels, TrainParams(epochs=40))
    repo.add_head_version(engine, "onnx-int8", HeadArtifact.from_head(r8.head, r8.labels, INT8_ID))
    repo.add_head_version(engine, "onnx-torch", HeadArtifact.from_head(rt.head, rt.labels, minilm.model_id))
    return {"int8": (r8, offline8), "torch": rt}


def test_int8_worker_serves_its_head_and_refuses_a_torch_head(settings, engine, heads, start_worker, tmp_path):
    r8, offline = heads["int8"]
    holdout = load_labeled(HOLDOUT_CSV)
    tasks = [{"id": f"i8-{i}", "kwargs": {"head": "onnx-int8", "text": t}} for i, t in enumerate(holdout.texts)]
    refused = [{"id": f"i8-torch-{i}", "kwargs": {"head": "onnx-torch", "text": t}}
               for i, t in enumerate(holdout.texts[:5])]
    tasks = tasks[:20] + refused + tasks[20:]
    worker = start_worker(settings_env(settings, EMBEDCLF_EMBEDDER="minilm-int8", EMBEDCLF_BATCH_MAX_SIZE="32",
                                       EMBEDCLF_BATCH_MAX_WAIT_MS="50"), name="w-int8")
    worker.wait_ready()
    produce(settings.broker_url, tasks, tmp_path)
    rows = wait_rows(engine, [t["id"] for t in tasks], worker)

    ok = [rows[f"i8-{i}"] for i in range(len(holdout.texts))]
    assert all(r["status"] == "ok" and r["embedder_id"] == INT8_ID and r["head_name"] == "onnx-int8" for r in ok)
    accuracy = sum(r["label"] == y for r, y in zip(ok, holdout.labels)) / len(ok)
    assert accuracy >= 0.90, f"held-out accuracy {accuracy:.3f}"
    # int8 quantises a run's activations with one scale, so it runs each text alone: the worker's batches
    # (32 tasks, in arrival order) give every text the offline pipeline's vector, hence its label and score
    agree = sum(r["label"] == r8.labels[int(p.argmax())] for r, p in zip(ok, offline)) / len(ok)
    assert agree == 1.0, f"worker vs offline labels agree on {agree:.3f}"
    for r, p in zip(ok, offline):
        assert r["score"] == pytest.approx(float(p.max()), abs=1e-5)

    for t in refused:
        r = rows[t["id"]]
        assert r["status"] == "error" and r["label"] is None and r["top3"] is None
        assert f"was trained on embedder '{TORCH_ID}'; this worker runs '{INT8_ID}'" in r["error"], r["error"]
        # the row says what to do: both ways out, exactly
        assert ("set EMBEDCLF_EMBEDDER=minilm on the workers, or retrain the head with "
                "`embedclf heads train --embedder minilm-int8`") in r["error"], r["error"]
    # and the worker said so at start, for the head that was already active
    log = worker.log()
    assert (f"head onnx-torch v1 was trained on embedder '{TORCH_ID}' but this worker runs '{INT8_ID}' "
            "(EMBEDCLF_EMBEDDER=minilm-int8): its tasks get error rows until you set EMBEDCLF_EMBEDDER=minilm") in log
    assert "head onnx-int8 v1 was trained" not in log
    batches = {r["completed_at"] for r in ok}
    assert len(batches) < len(ok) / 4, f"{len(batches)} batches for {len(ok)} tasks"
    assert worker.alive()
    print(f"\nint8 worker: held-out accuracy {accuracy:.3f}, agreement with offline {agree:.3f}")


@pytest.mark.parametrize("spec", ["minilm-onnx", "minilm-int8w"])
def test_worker_with_torch_vectors_serves_a_torch_head(spec, settings, engine, heads, minilm, start_worker, tmp_path):
    """fp32 gives torch's answers exactly; int8w's vectors are interchangeable (cosine >= 0.999), so nearly."""
    rt = heads["torch"]
    holdout = load_labeled(HOLDOUT_CSV)
    tag = spec.replace("minilm-", "")
    tasks = [{"id": f"{tag}-{i}", "kwargs": {"head": "onnx-torch", "text": t}} for i, t in enumerate(holdout.texts)]
    worker = start_worker(settings_env(settings, EMBEDCLF_EMBEDDER=spec, EMBEDCLF_BATCH_MAX_SIZE="32",
                                       EMBEDCLF_BATCH_MAX_WAIT_MS="50"), name=f"w-{tag}")
    worker.wait_ready()
    produce(settings.broker_url, tasks, tmp_path)
    rows = wait_rows(engine, [t["id"] for t in tasks], worker)

    offline = rt.head.predict_proba(minilm.embed(holdout.texts))  # torch vectors
    same = 0
    for i, p in enumerate(offline):
        r = rows[f"{tag}-{i}"]
        assert r["status"] == "ok" and r["embedder_id"] == TORCH_ID
        same += r["label"] == rt.labels[int(p.argmax())]
        if spec == "minilm-onnx":
            assert r["label"] == rt.labels[int(p.argmax())]
            assert r["score"] == pytest.approx(float(p.max()), abs=1e-4)
        else:
            assert r["score"] == pytest.approx(float(p.max()), abs=0.05)
    assert same / len(offline) >= 0.97, f"{same} of {len(offline)} labels equal the torch pipeline's"
    accuracy = sum(rows[f"{tag}-{i}"]["label"] == y for i, y in enumerate(holdout.labels)) / len(holdout.labels)
    assert accuracy >= 0.90, f"held-out accuracy {accuracy:.3f}"
    print(f"\n{spec} worker, torch head: {same} of {len(offline)} labels as torch, held-out accuracy {accuracy:.3f}")
