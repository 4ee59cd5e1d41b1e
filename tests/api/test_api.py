"""The HTTP API against a real worker: wait and no-wait, multi-text, results, heads, concurrency, a worker down."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from sqlalchemy import text

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

ENTRY_KEYS = {"status", "label", "score", "top3", "labels", "abstained", "head_name", "head_version", "item",
              "request_id", "error"}


def post(api, body: dict, **kw) -> httpx.Response:
    return httpx.post(f"{api.url}/v1/classify", json=body, timeout=60, **kw)


def test_wait_returns_the_entry_of_one_text(api):
    r = post(api, {"head": "tiny", "text": "where is my parcel", "request_id": "r-1", "wait": True, "timeout_s": 30})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok" and isinstance(body["task_id"], str) and len(body["task_id"]) == 36
    e = body["result"]
    assert set(e) == ENTRY_KEYS and e["label"] in ("x", "y") and e["head_name"] == "tiny" and e["head_version"] == 1
    assert e["request_id"] == "r-1" and e["item"] == 0 and e["abstained"] is False and e["error"] is None
    assert [t["label"] for t in e["top3"]][0] == e["label"] and e["score"] == pytest.approx(e["top3"][0]["score"])
    assert [p.split(";")[0] for p in r.headers["server-timing"].split(", ")] == ["parse", "enqueue", "wait"]
    # the same result by id
    again = httpx.get(f"{api.url}/v1/results/{body['task_id']}", timeout=10)
    assert again.status_code == 200 and again.json() == body


def test_no_wait_answers_202_then_the_result_appears(api):
    r = post(api, {"head": "tiny", "text": "refund please", "request_id": 7})
    assert r.status_code == 202, r.text
    acc = r.json()
    assert acc["items"] == 1 and acc["result_url"] == f"/v1/results/{acc['task_id']}"
    assert r.headers["location"] == acc["result_url"]
    deadline = time.monotonic() + 60
    while (got := httpx.get(api.url + acc["result_url"], timeout=10)).status_code == 404:
        assert got.json()["error"] == "not_found" and got.json()["task_id"] == acc["task_id"]
        assert time.monotonic() < deadline, "no result after 60s"
        time.sleep(0.1)
    assert got.status_code == 200
    assert got.json()["result"]["request_id"] == "7" and got.json()["result"]["status"] == "ok"


def test_multi_text_multi_head_in_item_head_order(api):
    r = post(api, {"heads": ["tiny", "other"], "texts": ["one", "two", "three"], "request_ids": ["a", None, 3],
                   "wait": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    got = [(e["item"], e["head_name"], e["request_id"]) for e in body["result"]]
    assert got == [(0, "other", "a"), (0, "tiny", "a"), (1, "other", None), (1, "tiny", None),
                   (2, "other", "3"), (2, "tiny", "3")]
    assert all(e["status"] == "ok" and e["label"] in ("x", "y") for e in body["result"])
    # one text sent as texts=[...]: still a list, as a Celery result would be
    one = post(api, {"head": "tiny", "texts": ["solo"], "wait": True}).json()
    assert isinstance(one["result"], list) and one["result"][0]["item"] == 0


def test_heads_endpoint_lists_the_active_heads(api):
    r = httpx.get(f"{api.url}/v1/heads", timeout=10)
    assert r.status_code == 200
    heads = r.json()["heads"]
    assert [(h["name"], h["version"], h["labels"], h["embedder"]) for h in heads] == [
        ("other", 1, ["x", "y"], "fake:32"), ("tiny", 1, ["x", "y"], "fake:32")]
    assert all(h["activated_at"] for h in heads)


def test_results_endpoint_unknown_and_invalid_ids(api):
    r = httpx.get(f"{api.url}/v1/results/never-sent", timeout=10)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = httpx.get(f"{api.url}/v1/results/a/b%2Fc", timeout=10)  # ids chosen by other producers may hold '/'
    assert r.status_code == 404 and r.json()["task_id"] == "a/b/c"
    r = httpx.get(f"{api.url}/v1/results/{'x' * 256}", timeout=10)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"


def test_openapi_docs_are_served(api):
    assert httpx.get(f"{api.url}/docs", timeout=10).status_code == 200
    spec = httpx.get(f"{api.url}/openapi.json", timeout=10).json()
    assert {"/v1/classify", "/v1/results/{task_id}", "/v1/heads", "/livez", "/readyz"} <= set(spec["paths"])
    body = spec["paths"]["/v1/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"head", "heads", "text", "texts", "wait", "timeout_s"} <= set(body["properties"])


async def _many(url: str, bodies: list[dict], timeout: float = 120) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=timeout,
                                 limits=httpx.Limits(max_connections=len(bodies))) as client:
        return await asyncio.gather(*(client.post("/v1/classify", json=b) for b in bodies))


def test_concurrent_waiting_requests_each_get_their_own_result(api):
    n = 30
    bodies = [{"head": "tiny" if i % 2 else "other", "text": f"text number {i}", "request_id": f"c{i}",
               "wait": True, "timeout_s": 60} for i in range(n)]
    replies = asyncio.run(_many(api.url, bodies))
    assert [r.status_code for r in replies] == [200] * n, [r.text for r in replies if r.status_code != 200][:3]
    results = [r.json()["result"] for r in replies]
    assert [(e["request_id"], e["head_name"]) for e in results] == [(b["request_id"], b["head"]) for b in bodies]
    assert len({r.json()["task_id"] for r in replies}) == n


def _connections(engine) -> tuple[int, int]:
    """(connections to the test database, of which LISTEN connections)."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT query FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND pid <> pg_backend_pid()")).scalars().all()
    return len(rows), sum(q.strip().upper().startswith("LISTEN") for q in rows)


def test_worker_down_waits_time_out_with_504_on_one_listen_connection(idle_api, engine):
    """No worker reads the queue: 25 waiting requests share the one LISTEN connection, then each gets a
    clean 504 within its timeout_s, and their tasks stay queued."""
    httpx.get(f"{idle_api.url}/readyz", timeout=10)  # the pool and the hub are warm
    before, listening_before = _connections(engine)
    assert listening_before >= 1  # this server's hub (and that of any other server still running)
    n, timeout_s = 25, 3.0
    bodies = [{"head": "tiny", "text": f"t{i}", "wait": True, "timeout_s": timeout_s} for i in range(n)]

    async def run() -> tuple[list[httpx.Response], tuple[int, int], float]:
        t0 = time.monotonic()
        task = asyncio.ensure_future(_many(idle_api.url, bodies))
        await asyncio.sleep(1.5)  # all of them wait now
        during = _connections(engine)
        replies = await task
        return replies, during, time.monotonic() - t0

    replies, (during, listening), elapsed = asyncio.run(run())
    assert listening == listening_before, "waiting requests should share the hub's one LISTEN connection"
    assert during - before <= 2, (before, during)
    assert [r.status_code for r in replies] == [504] * n
    for r in replies:
        body = r.json()
        assert body["error"] == "timeout" and body["result_url"] == f"/v1/results/{body['task_id']}"
        assert "Traceback" not in r.text
    assert timeout_s <= elapsed < timeout_s + 5
    assert idle_api.redis.llen(idle_api.queue) == n  # still queued, for a worker that comes back


def test_a_task_that_fails_as_a_whole_is_a_200_with_its_error(api, engine):
    """Valid request, failed classification (the head expects another embedder than the worker runs)."""
    from tests.helpers import tiny_head

    tiny_head(engine, "wrongdim", dim=16)  # active, so the API accepts it; the worker runs fake:32
    r = post(api, {"head": "wrongdim", "text": "hello", "wait": True, "timeout_s": 60})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "error"
    e = body["result"]
    assert e["status"] == "error" and e["label"] is None and e["error"]
    r = post(api, {"heads": ["tiny", "wrongdim"], "text": "hello", "wait": True, "timeout_s": 60})
    assert r.status_code == 200 and r.json()["status"] == "partial"
    assert {e["head_name"]: e["status"] for e in r.json()["result"]} == {"tiny": "ok", "wrongdim": "error"}
