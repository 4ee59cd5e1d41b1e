"""Hostile payloads through the real queue (hypothesis): the right rows for each, the worker never falls over.

A ``text`` task gets exactly one row; a ``texts`` task one row per text, or one row when it is
invalid as a whole.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from celery import Celery
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.payload import PayloadError, parse_request
from embedclf.store import repository as repo
from tests.conftest import settings_env
from tests.helpers import rows_by_key

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
        "texts": st.one_of(st.lists(hostile_text, min_size=1, max_size=5), json_value),
        "request_ids": st.one_of(st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=5)), max_size=5),
                                 json_value),
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


def expected_rows(task_id: str, kwargs: dict) -> dict[object, str]:
    """{item: status} of the rows the task should get (item None: one row for the whole task)."""
    from embedclf.envelope import encode

    if len(encode("embedclf.classify", task_id, kwargs, "celery")) > 1_048_576:
        return {None: "error"}  # refused undecoded: the worker cannot know the task's shape
    try:
        r = parse_request(task_id, (), kwargs, MAX_CHARS)
    except PayloadError:
        return {None if "texts" in kwargs else 0: "error"}
    status = "ok" if r.heads == ("fz",) else "error"
    return {**{it.item: status for it in r.items}, **{b.item: "error" for b in r.bad}}


# 20 examples of 50 payloads: 1,000 hostile tasks. (Lists of 200 overran hypothesis's buffer, so only the
# minimal example, 200 empty payloads, ever ran; test_the_examples_are_hostile keeps that from coming back.)
EXAMPLES, PER_EXAMPLE = 20, 50
_generated: list[int] = []


@pytest.fixture(scope="module")
def examples_check():
    """After the fuzz test (in its own test process, wherever pytest-xdist runs it): it really ran its
    examples, and they were not empty."""
    yield
    assert len(_generated) == EXAMPLES and sum(_generated) >= EXAMPLES * PER_EXAMPLE // 2, _generated


@hsettings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
           database=None)
@given(st.lists(payload, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
def test_hostile_payloads_each_get_their_rows(examples_check, fuzz_worker, settings, engine, payloads):
    _generated.append(sum(1 for p in payloads if p))
    app = Celery(broker=settings.broker_url)
    sent: dict[str, tuple[dict, dict]] = {}
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
            sent[tid] = (kwargs, expected_rows(tid, kwargs))
    app.close()
    want = sum(len(e) for _, e in sent.values())
    t_wait = time.monotonic()
    deadline = time.monotonic() + 180
    while len(rows := rows_by_key(engine, list(sent))) < want and time.monotonic() < deadline:
        assert fuzz_worker.alive(), fuzz_worker.log()[-3000:]
        time.sleep(0.3)
    assert len(rows) == want
    print(f"rows after {time.monotonic() - t_wait:.1f}s")
    for tid, (kwargs, expected) in sent.items():
        got = {item: row["status"] for (t, item, _), row in rows.items() if t == tid}
        assert got == expected, (kwargs, got, [r["error"] for (t, _, _), r in rows.items() if t == tid])
        for (t, _, _), row in rows.items():
            if t == tid and row["status"] == "error":
                assert row["error"] and "\x00" not in row["error"] and len(row["error"]) <= 1000
    assert fuzz_worker.alive()
