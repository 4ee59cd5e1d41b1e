"""Bad input always gets a 4xx JSON error, nothing is enqueued for it; the token guards /v1; probes."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.api.server import ApiServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

BIG = 1_048_576  # EMBEDCLF_MAX_PAYLOAD_BYTES default

# (case, body or raw bytes, status, error code, fragment of the message)
CASES = [
    ("empty text", {"head": "tiny", "text": "  "}, 422, "invalid_request", "'text' is empty"),
    ("NUL in text", {"head": "tiny", "text": "a\x00b"}, 422, "invalid_request", "NUL"),
    ("text not a string", {"head": "tiny", "text": 5}, 422, "invalid_request", "must be a string"),
    ("no text", {"head": "tiny"}, 422, "invalid_request", "missing required field(s): text"),
    ("no head", {"text": "x"}, 422, "invalid_request", "missing required field(s): head"),
    ("head and heads", {"head": "tiny", "heads": ["tiny"], "text": "x"}, 422, "invalid_request", "not both"),
    ("heads not a list", {"heads": "tiny", "text": "x"}, 422, "invalid_request", "'heads' must be a list"),
    ("duplicate heads", {"heads": ["tiny", "tiny"], "text": "x"}, 422, "invalid_request", "more than once"),
    ("unknown field", {"head": "tiny", "text": "x", "colour": "red"}, 422, "invalid_request", "'colour'"),
    ("enqueued_at is the server's", {"head": "tiny", "text": "x", "enqueued_at": 1.0}, 422, "invalid_request",
     "'enqueued_at'"),
    ("request_id a dict", {"head": "tiny", "text": "x", "request_id": {}}, 422, "invalid_request", "'request_id'"),
    ("request_id too long", {"head": "tiny", "text": "x", "request_id": "r" * 300}, 422, "invalid_request",
     "longer than"),
    ("request_ids with text", {"head": "tiny", "text": "x", "request_ids": ["a"]}, 422, "invalid_request",
     "'request_ids' goes with 'texts'"),
    ("request_ids wrong length", {"head": "tiny", "texts": ["a", "b"], "request_ids": ["a"]}, 422,
     "invalid_request", "one id per text"),
    ("texts empty list", {"head": "tiny", "texts": []}, 422, "invalid_request", "1 to 1000"),
    ("too many texts", {"head": "tiny", "texts": ["t"] * 1001}, 422, "invalid_request", "got 1001"),
    ("texts not a list", {"head": "tiny", "texts": "abc"}, 422, "invalid_request", "'texts' must be a list"),
    ("a bad text among good ones", {"head": "tiny", "texts": ["ok", "", "fine", 3]}, 422, "invalid_request",
     "'texts[1]' is empty (and 1 more)"),
    ("text too long", {"head": "tiny", "text": "x" * 20_001}, 422, "invalid_request", "too long"),
    ("wait not a bool", {"head": "tiny", "text": "x", "wait": "yes"}, 422, "invalid_request", "'wait'"),
    ("timeout_s negative", {"head": "tiny", "text": "x", "wait": True, "timeout_s": -1}, 422, "invalid_request",
     "'timeout_s'"),
    ("timeout_s a string", {"head": "tiny", "text": "x", "wait": True, "timeout_s": "5"}, 422, "invalid_request",
     "'timeout_s'"),
    ("timeout_s too long", {"head": "tiny", "text": "x", "wait": True, "timeout_s": 3600}, 422,
     "invalid_request", "<= 300"),
    ("unknown head", {"head": "nope", "text": "x"}, 422, "unknown_head",
     "unknown head 'nope' (active heads: other, tiny)"),
    ("unknown head among several", {"heads": ["tiny", "nope"], "text": "x"}, 422, "unknown_head", "'nope'"),
    ("a JSON list", [{"head": "tiny", "text": "x"}], 422, "invalid_request", "must be a JSON object"),
    ("malformed JSON", b'{"head": "tiny", "text": ', 400, "invalid_json", "not valid JSON"),
    ("empty body", b"", 400, "invalid_json", "empty"),
    ("NaN", b'{"head": "tiny", "text": "x", "timeout_s": NaN}', 400, "invalid_json", "not valid JSON"),
    ("invalid UTF-8", b'{"head": "tiny", "text": "\xff\xfe"}', 400, "invalid_json", "not valid JSON"),
    ("lone surrogate", b'{"head": "tiny", "text": "\\ud800"}', 400, "invalid_json", "not valid JSON"),
    ("deep nesting", b'{"head": "tiny", "text": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "invalid_json", ""),
    ("body over the limit", {"head": "tiny", "text": "x" * (BIG + 10)}, 413, "payload_too_large",
     "larger than 1048576 bytes"),
    ("fits the body, not one message", {"head": "tiny", "texts": ["\U0001F600" * 10_000] * 10}, 413,
     "payload_too_large", "one task message"),
]


def send(api, body, **kw) -> httpx.Response:
    raw = json.dumps(body, ensure_ascii=False).encode() if isinstance(body, (dict, list)) else body
    headers = {"content-type": "application/json", **kw.pop("headers", {})}
    return httpx.post(f"{api.url}/v1/classify", content=raw, headers=headers, timeout=30, **kw)


def check_error(r: httpx.Response, status: int, code: str, fragment: str = "") -> dict:
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] == code and fragment in body["message"], body
    assert "Traceback" not in r.text
    return body


@pytest.mark.parametrize("case, body, status, code, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_4xx_json_error_and_nothing_is_enqueued(idle_api, case, body, status, code, fragment):
    out = check_error(send(idle_api, body), status, code, fragment)
    assert idle_api.redis.llen(idle_api.queue) == 0
    if case == "a bad text among good ones":
        assert out["errors"] == [{"item": 1, "error": "'texts[1]' is empty"},
                                 {"item": 3, "error": "'texts[3]' must be a string, got int"}]
    if case == "unknown head":
        assert out["active_heads"] == ["other", "tiny"] and out["unknown_heads"] == ["nope"]


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(idle_api):
    def chunks():
        yield b'{"head": "tiny", "text": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    check_error(send(idle_api, chunks()), 413, "payload_too_large")
    assert idle_api.redis.llen(idle_api.queue) == 0


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_declared_json_is_415(idle_api, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = httpx.post(f"{idle_api.url}/v1/classify", content=b'{"head": "tiny", "text": "x"}', headers=headers,
                   timeout=10)
    check_error(r, 415, "unsupported_media_type")
    assert idle_api.redis.llen(idle_api.queue) == 0


def test_json_with_a_charset_and_vendor_json_are_accepted(idle_api):
    for ct in ("application/json; charset=utf-8", "application/vnd.embedclf+json"):
        r = send(idle_api, {"head": "tiny", "text": "x"}, headers={"content-type": ct})
        assert r.status_code == 202, r.text
    idle_api.redis.delete(idle_api.queue)


def test_unknown_routes_and_methods_are_json(idle_api):
    check_error(httpx.get(f"{idle_api.url}/v1/nope", timeout=10), 404, "not_found")
    check_error(httpx.delete(f"{idle_api.url}/v1/classify", timeout=10), 405, "method_not_allowed")
    check_error(httpx.get(f"{idle_api.url}/v1/classify", timeout=10), 405, "method_not_allowed")


def test_probes_answer(idle_api):
    assert httpx.get(f"{idle_api.url}/livez", timeout=10).json() == {"ok": True}
    r = httpx.get(f"{idle_api.url}/readyz", timeout=10)
    assert r.status_code == 200 and r.json() == {"ok": True, "broker": {"ok": True}, "database": {"ok": True}}


def test_readyz_is_503_when_broker_and_database_do_not_answer(settings):
    from tests.helpers import free_port

    port = free_port()  # nothing listens there
    down = settings.with_overrides(broker_url=f"redis://:redis-secret-pw@127.0.0.1:{port}/0",
                                   database_url=f"postgresql+psycopg2://app:pg-secret-pw@127.0.0.1:{port}/x")
    with ApiServer(down) as api:
        assert httpx.get(f"{api.url}/livez", timeout=10).status_code == 200
        r = httpx.get(f"{api.url}/readyz", timeout=15)
        assert r.status_code == 503
        body = r.json()
        assert body["ok"] is False and not body["broker"]["ok"] and not body["database"]["ok"]
        assert body["broker"]["error"] and body["database"]["error"]
        assert "secret-pw" not in r.text
        # the database is down: results and heads are a 503, not a 500
        check_error(httpx.get(f"{api.url}/v1/heads", timeout=15), 503, "database_unavailable")
        check_error(httpx.get(f"{api.url}/v1/results/abc", timeout=15), 503, "database_unavailable")
        # the broker is down: the task cannot be enqueued (after the API's 5 s of retries)
        t0 = time.monotonic()
        r = httpx.post(f"{api.url}/v1/classify", json={"head": "tiny", "text": "x", "wait": True}, timeout=30)
        body = check_error(r, 503, "broker_unavailable", "unreachable")
        assert r.headers["retry-after"] and "secret-pw" not in r.text and time.monotonic() - t0 < 15, body


def test_too_many_waiting_is_503_before_anything_is_enqueued(settings, active_heads):
    import asyncio

    import redis

    s = settings.with_overrides(queue="http-crowded")
    queue = redis.Redis.from_url(settings.broker_url)
    queue.delete(s.queue)

    async def crowd(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            waits = [asyncio.ensure_future(client.post("/v1/classify", json={
                "head": "tiny", "text": f"w{i}", "wait": True, "timeout_s": 3})) for i in range(2)]
            await asyncio.sleep(1.0)  # both wait now
            more = await asyncio.gather(*(client.post("/v1/classify", json={
                "head": "tiny", "text": "late", "wait": True}) for _ in range(3)))
            return list(more) + list(await asyncio.gather(*waits))

    try:
        with ApiServer(s, max_waiting=2) as api:
            replies = asyncio.run(crowd(api.url))
            for r in replies[:3]:
                check_error(r, 503, "too_many_waiting", "2 requests are waiting")
            assert [r.status_code for r in replies[3:]] == [504, 504]
            assert queue.llen(s.queue) == 2  # the refused requests enqueued nothing
            # once they are answered, waiting is possible again (the count went back down)
            r = httpx.post(f"{api.url}/v1/classify", json={"head": "tiny", "text": "y", "wait": True, "timeout_s": 0.5},
                           timeout=10)
            assert r.status_code == 504
    finally:
        queue.delete(s.queue)


TOKEN = "t0ken-for-the-tests-0123456789"


@pytest.fixture(scope="module")
def locked_api(settings, active_heads):
    import redis

    s = settings.with_overrides(api_token=TOKEN, queue="http-locked")
    with ApiServer(s) as api:
        yield api
    redis.Redis.from_url(settings.broker_url).delete("http-locked")


@pytest.mark.parametrize("auth", [None, "Bearer wrong", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN,
                                  f"Bearer {TOKEN[:-1]}", "Bearer", "bearer", "Bearer caf\u00e9".encode()])
def test_v1_needs_the_right_bearer_token(locked_api, auth):
    headers = {"authorization": auth} if auth is not None else {}
    for method, path in (("POST", "/v1/classify"), ("GET", "/v1/heads"), ("GET", "/v1/results/abc")):
        r = httpx.request(method, f"{locked_api.url}{path}", headers=headers, timeout=10,
                          json={"head": "tiny", "text": "x"} if method == "POST" else None)
        check_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"


def test_the_right_token_opens_v1_and_probes_stay_open(locked_api):
    ok = {"authorization": f"Bearer {TOKEN}"}
    r = httpx.post(f"{locked_api.url}/v1/classify", json={"head": "tiny", "text": "x"}, headers=ok, timeout=10)
    assert r.status_code == 202, r.text
    assert httpx.get(f"{locked_api.url}/v1/heads", headers=ok, timeout=10).status_code == 200
    assert httpx.get(f"{locked_api.url}/v1/results/none", headers=ok, timeout=10).status_code == 404
    assert httpx.get(f"{locked_api.url}/livez", timeout=10).status_code == 200
    assert httpx.get(f"{locked_api.url}/readyz", timeout=10).status_code == 200
    spec = httpx.get(f"{locked_api.url}/openapi.json", timeout=10).json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
