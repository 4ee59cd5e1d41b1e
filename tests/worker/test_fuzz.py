"""Hostile payloads through the real queue (hypothesis): one row each, the worker never falls over."""

from __future__ import annotations

import json
import uuid

import pytest
from celery import Celery
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.payload import PayloadError, parse_request
from embedclf.store import repository as repo
from tests.conftest import settings_env
from tests.worker.test_e2e import wait_rows

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

MAX_CHARS = 20_000
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                          max_leaves=30)
hostile_text = st.one_of(
    st.text(max_size=60),  # any unicode, lone surrogates and NULs included
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=60),
    st.sampled_from(["", " ", "\x00", "a\x00b", "\ud800", "x" * (MAX_CHARS + 1), "ok text"]),
    json_value,
)
payload = st.fixed_dictionaries(
    {},
    optional={
        "head": st.one_of(st.just("fz"), st.just("fz"), st.text(max_size=10), json_value),
        "text": hostile_text,
        "request_id": st.one_of(st.integers(), st.text(max_size=300), json_value),
        "enqueued_at": st.one_of(st.floats(), st.integers(min_value=-10**30, max_value=10**30), json_value),
        "extra": json_value,
    },
)


def nested(depth: int):
    value: object = "deep"
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture(scope="module")
def fuzz_worker(settings, engine, tmp_path_factory):
    from tests.conftest import WorkerProcess

    head = MLPHead(HeadConfig(input_dim=32, num_labels=2, hidden_dim=8))
    repo.add_head_version(engine, "fz", HeadArtifact.from_head(head, ["x", "y"], "fake:32"))
    w = WorkerProcess(settings_env(settings, EMBEDCLF_EMBEDDER="fake:32", EMBEDCLF_MAX_TEXT_CHARS=str(MAX_CHARS)),
                      tmp_path_factory.mktemp("fuzz"), "w-fuzz")
    w.wait_ready()
    yield w
    w.stop()


def expected_ok(task_id: str, kwargs: dict) -> bool:
    try:
        parse_request(task_id, (), kwargs, MAX_CHARS)
    except PayloadError:
        return False
    return kwargs["head"] == "fz"


@hsettings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(payload, min_size=200, max_size=200))
def test_hostile_payloads_each_get_one_row(fuzz_worker, settings, engine, payloads):
    app = Celery(broker=settings.broker_url)
    sent: dict[str, tuple[dict, bool]] = {}
    extras = [{"head": "fz", "text": "valid neighbour"}, {"head": "fz", "text": nested(500)},
              {"head": "fz", "text": "y" * (3 * 1024 * 1024)}, {"head": "fz", "text": "valid again"}]
    with app.producer_or_acquire() as producer:
        for kwargs in payloads + extras:
            tid = f"fz-{uuid.uuid4()}"
            try:
                json.dumps(kwargs)
            except (TypeError, ValueError):
                continue
            app.send_task("embedclf.classify", kwargs=kwargs, task_id=tid, producer=producer)
            sent[tid] = (kwargs, expected_ok(tid, kwargs))
    app.close()
    rows = wait_rows(engine, list(sent), fuzz_worker, timeout=180)
    assert set(rows) == set(sent)
    for tid, (kwargs, ok) in sent.items():
        row = rows[tid]
        assert row["status"] == ("ok" if ok else "error"), (kwargs, row["error"])
        if not ok:
            assert row["error"] and "\x00" not in row["error"] and len(row["error"]) <= 1000
    assert fuzz_worker.alive()
