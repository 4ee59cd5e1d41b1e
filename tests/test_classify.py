"""classify_requests: one row per request, embed once, isolate failures."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch

from embedclf.classify import LoadedHead, classify_requests, embed_isolating, error_row
from embedclf.embedders.fake import FakeEmbedder
from embedclf.payload import ClassifyRequest
from tests.helpers import loaded_head, req

DIM = 32


class BoomEmbedder(FakeEmbedder):
    """Fails any batch that contains a text with 'BOOM' in it."""

    def embed_batch(self, texts):
        if any("BOOM" in t for t in texts):
            raise RuntimeError("backend exploded")
        return super().embed_batch(texts)


@pytest.fixture
def heads() -> dict[str, LoadedHead]:
    return {
        "support": loaded_head("support", ["billing", "bug", "shipping", "account"], version=3, seed=1),
        "sentiment": loaded_head("sentiment", ["neg", "neu", "pos"], version=1, seed=2),
    }


def expected_label(head: LoadedHead, text: str) -> str:
    vec = FakeEmbedder(DIM).embed_batch([text])
    return head.labels[int(head.module.predict_proba(vec)[0].argmax())]


def assert_ok_row(row: dict, head: LoadedHead) -> None:
    assert row["status"] == "ok"
    top3 = row["top3"]
    assert len(top3) == 3
    assert all(set(d) == {"label", "score"} for d in top3)
    scores = [d["score"] for d in top3]
    assert scores == sorted(scores, reverse=True)
    # scores are rounded to 6 decimals: allow the rounding of three values
    assert sum(scores) <= 1.0 + 2e-6
    if len(head.labels) == 3:
        assert sum(scores) == pytest.approx(1.0, abs=2e-6)
    assert len({d["label"] for d in top3}) == 3
    assert all(d["label"] in head.labels for d in top3)
    assert row["label"] == top3[0]["label"]
    assert row["score"] == pytest.approx(top3[0]["score"], abs=1e-6)
    assert row["head_version"] == head.version


def test_rows_in_input_order_with_correct_predictions(heads):
    texts = ["refund my invoice", "app crashes on start", "great service thanks", "parcel delayed", "login broken"]
    names = ["support", "support", "sentiment", "support", "sentiment"]
    requests = [req(i, n, t) for i, (n, t) in enumerate(zip(names, texts))]
    emb = FakeEmbedder(DIM)
    rows = classify_requests(requests, emb, heads)
    assert [r["task_id"] for r in rows] == [f"t{i}" for i in range(5)]
    for r, name, text, i in zip(rows, names, texts, range(5)):
        head = heads[name]
        assert_ok_row(r, head)
        assert r["head_name"] == name
        assert r["text"] == text
        assert r["request_id"] == f"r{i}"
        assert r["embedder_id"] == emb.model_id
        # same answer as classifying this text alone: batching must not mix rows
        assert r["label"] == expected_label(head, text)


def test_one_embed_call_for_the_whole_batch(heads):
    requests = [req(i, "support", f"distinct text number {i}") for i in range(7)]
    emb = FakeEmbedder(DIM)
    classify_requests(requests, emb, heads)
    assert emb.calls == [7]


def test_identical_texts_embedded_once_across_heads(heads):
    requests = [
        req(0, "support", "same text"),
        req(1, "sentiment", "same text"),
        req(2, "support", "other text"),
        req(3, "support", "same text"),
    ]
    emb = FakeEmbedder(DIM)
    rows = classify_requests(requests, emb, heads)
    assert emb.calls == [2]
    assert all(r["status"] == "ok" for r in rows)
    assert rows[0]["top3"] == rows[3]["top3"]
    assert rows[1]["label"] in heads["sentiment"].labels
    assert rows[0]["label"] in heads["support"].labels


def test_unknown_head_gives_error_row_listing_active_heads(heads):
    when = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    requests = [req(0, "support", "hello"), req(1, "nope", "hello", enqueued_at=when)]
    rows = classify_requests(requests, FakeEmbedder(DIM), heads)
    assert rows[0]["status"] == "ok"
    err = rows[1]
    assert err["status"] == "error" and err["task_id"] == "t1"
    assert "'nope'" in err["error"]
    assert "sentiment, support" in err["error"]
    assert err["head_name"] == "nope" and err["request_id"] == "r1"
    assert err["enqueued_at"] == when
    assert "label" not in err


def test_unknown_head_with_no_active_heads():
    emb = FakeEmbedder(DIM)
    rows = classify_requests([req(0, "x", "hi")], emb, {})
    assert rows[0]["status"] == "error" and "none" in rows[0]["error"]
    assert emb.calls == []  # nothing runnable: nothing embedded


def test_embedder_mismatch_names_both_ids(heads):
    heads = heads | {"old": loaded_head("old", ["a", "b", "c"], embedder_id="minilm:v1", version=4)}
    emb = FakeEmbedder(DIM)
    rows = classify_requests([req(0, "old", "hi"), req(1, "support", "hi")], emb, heads)
    err = rows[0]
    assert err["status"] == "error"
    assert "minilm:v1" in err["error"] and emb.model_id in err["error"]
    assert "v4" in err["error"]
    # and what to do about it, for ids the advice does not know either
    assert "EMBEDCLF_EMBEDDER" in err["error"] and "embedclf heads train --embedder" in err["error"]
    assert err["head_version"] == 4 and err["embedder_id"] == emb.model_id
    assert rows[1]["status"] == "ok"
    assert emb.calls == [1]  # the mismatched request is not embedded


def test_failing_text_is_isolated(heads):
    texts = ["fine one", "this one goes BOOM", "fine two", "this one goes BOOM", "fine three"]
    requests = [req(i, "support", t) for i, t in enumerate(texts)]
    emb = BoomEmbedder(DIM)
    rows = classify_requests(requests, emb, heads)
    assert [r["status"] for r in rows] == ["ok", "error", "ok", "error", "ok"]
    for i in (1, 3):
        assert "embedding failed" in rows[i]["error"]
        assert "RuntimeError" in rows[i]["error"] and "backend exploded" in rows[i]["error"]
        assert rows[i]["request_id"] == f"r{i}" and rows[i]["head_name"] == "support"
    for i in (0, 2, 4):
        assert_ok_row(rows[i], heads["support"])
        assert rows[i]["label"] == expected_label(heads["support"], texts[i])
    # the failed batch call is not recorded; then one call per distinct text
    assert emb.calls == [1, 1, 1]


def test_embed_isolating_reports_failed_indices():
    emb = BoomEmbedder(DIM)
    vecs, failed = embed_isolating(emb, ["a", "BOOM", "c"])
    assert set(failed) == {1}
    assert vecs.shape == (3, DIM) and vecs.dtype == np.float32
    np.testing.assert_array_equal(vecs[1], 0.0)
    np.testing.assert_allclose(vecs[[0, 2]], FakeEmbedder(DIM).embed_batch(["a", "c"]), atol=1e-7)


def test_embed_isolating_happy_path_single_call():
    emb = FakeEmbedder(DIM)
    vecs, failed = embed_isolating(emb, ["a", "b"])
    assert failed == {} and emb.calls == [2] and vecs.shape == (2, DIM)


def test_empty_batch():
    emb = FakeEmbedder(DIM)
    assert classify_requests([], emb, {}) == []
    assert emb.calls == []


def test_error_row_message_is_cleaned_and_bounded():
    row = error_row("t", "bad \x00 thing \ud800" + "x" * 5000, head_name="h")
    assert row["status"] == "error" and row["task_id"] == "t" and row["head_name"] == "h"
    assert "\x00" not in row["error"] and len(row["error"]) <= 1000
    row["error"].encode("utf-8")


# --- several heads, one embedding -----------------------------------------------------


class RecordingEmbedder(FakeEmbedder):
    """Remembers the texts of every ``embed_batch`` call."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.texts: list[list[str]] = []

    def embed_batch(self, texts):
        self.texts.append(list(texts))
        return super().embed_batch(texts)


def multi(i: int, heads: tuple[str, ...], text: str) -> ClassifyRequest:
    return ClassifyRequest(task_id=f"t{i}", head=None, text=text, request_id=f"r{i}", heads=heads)


def test_multi_head_task_gets_one_row_per_head_from_one_embedding(heads):
    texts = ["refund my invoice", "app crashes on start", "great service thanks"]
    requests = [multi(i, ("support", "sentiment"), t) for i, t in enumerate(texts)]
    requests.append(req(3, "sentiment", "app crashes on start"))  # same text, single-head task
    emb = RecordingEmbedder(DIM)
    rows = classify_requests(requests, emb, heads)
    # each distinct text embedded exactly once, in one call, for 7 rows
    assert len(emb.texts) == 1 and sorted(emb.texts[0]) == sorted(texts)
    assert [(r["task_id"], r["head_name"]) for r in rows] == [
        ("t0", "support"), ("t0", "sentiment"), ("t1", "support"), ("t1", "sentiment"),
        ("t2", "support"), ("t2", "sentiment"), ("t3", "sentiment")]
    for r in rows:
        head = heads[r["head_name"]]
        assert_ok_row(r, head)
        assert r["label"] == expected_label(head, r["text"])
        assert r["request_id"] == f"r{r['task_id'][1:]}"
    assert rows[3]["top3"] == rows[6]["top3"]  # same text, same head: same answer


def test_unknown_head_among_several_fails_only_that_head(heads):
    rows = classify_requests([multi(0, ("support", "nope", "sentiment"), "parcel delayed")], FakeEmbedder(DIM), heads)
    assert [(r["head_name"], r["status"]) for r in rows] == [("support", "ok"), ("nope", "error"), ("sentiment", "ok")]
    assert "unknown head 'nope'" in rows[1]["error"] and rows[1]["task_id"] == "t0"
    assert rows[1]["request_id"] == "r0"


def test_mismatched_embedder_among_several_fails_only_that_head(heads):
    heads = heads | {"old": loaded_head("old", ["a", "b"], embedder_id="minilm:v1", version=2)}
    rows = classify_requests([multi(0, ("old", "support"), "hi")], FakeEmbedder(DIM), heads)
    assert rows[0]["status"] == "error" and rows[0]["head_name"] == "old" and "minilm:v1" in rows[0]["error"]
    assert rows[1]["status"] == "ok" and rows[1]["head_name"] == "support"


def test_failed_embedding_gives_an_error_row_per_head(heads):
    rows = classify_requests([multi(0, ("support", "sentiment"), "goes BOOM"), multi(1, ("support",), "fine")],
                             BoomEmbedder(DIM), heads)
    assert [(r["task_id"], r["head_name"], r["status"]) for r in rows] == [
        ("t0", "support", "error"), ("t0", "sentiment", "error"), ("t1", "support", "ok")]
    assert all("backend exploded" in r["error"] for r in rows[:2])


def test_abstaining_head_keeps_top3_but_no_label():
    import dataclasses

    head = loaded_head("support", ["billing", "bug", "shipping", "account"], seed=1)
    texts = [f"text number {i}" for i in range(12)]
    proba = head.module.predict_proba(FakeEmbedder(DIM).embed_batch(texts))
    # a threshold between the lowest and highest top score: some rows answer, some abstain
    threshold = float(np.median(proba.max(1)))
    head.module.config = dataclasses.replace(head.module.config, abstain_threshold=threshold)
    rows = classify_requests([req(i, "support", t) for i, t in enumerate(texts)], FakeEmbedder(DIM), {"support": head})
    abstained = [r for r in rows if r["abstained"]]
    answered = [r for r in rows if not r["abstained"]]
    assert abstained and answered
    for r, p in zip(rows, proba):
        assert r["status"] == "ok" and len(r["top3"]) == 3
        assert r["score"] == pytest.approx(float(p.max()), abs=1e-6)
        assert r["abstained"] == bool(p.max() < threshold)
        if r["abstained"]:
            assert r["label"] is None and r["top3"][0]["label"] == head.labels[int(p.argmax())]
        else:
            assert r["label"] == r["top3"][0]["label"]


def test_out_of_scope_label_is_an_abstention():
    import dataclasses

    texts = [f"another text {i}" for i in range(20)]
    proba = None
    for seed in range(20):  # a random head that predicts "oos" for some texts but not all
        head = loaded_head("support", ["billing", "bug", "oos"], seed=seed)
        proba = head.module.predict_proba(FakeEmbedder(DIM).embed_batch(texts))
        if 0 < (proba.argmax(1) == 2).sum() < len(texts):
            break
    head.module.config = dataclasses.replace(head.module.config, oos_label="oos")
    rows = classify_requests([req(i, "support", t) for i, t in enumerate(texts)], FakeEmbedder(DIM), {"support": head})
    for r, p in zip(rows, proba):
        is_oos = head.labels[int(p.argmax())] == "oos"
        assert r["abstained"] == is_oos and (r["label"] is None) == is_oos
    assert 0 < sum(r["abstained"] for r in rows) < len(rows)  # both cases exercised


def test_heads_without_abstention_never_abstain(heads):
    rows = classify_requests([req(i, "support", f"t {i}") for i in range(5)], FakeEmbedder(DIM), heads)
    assert all(r["abstained"] is False and r["label"] for r in rows)


# --- multi-text tasks, chunked embedding, broken heads, transient embedder failures ----------


def multi_req(tid: str, heads: tuple[str, ...], texts: list, rids: list | None = None) -> ClassifyRequest:
    from embedclf.payload import parse_request

    kwargs: dict = {"heads": list(heads), "texts": texts}
    if rids is not None:
        kwargs["request_ids"] = rids
    return parse_request(tid, (), kwargs, 1000)


def test_a_texts_task_gets_one_row_per_text_and_head_with_its_item(heads):
    emb = FakeEmbedder(DIM)
    r = multi_req("m1", ("support", "sentiment"), ["refund please", "", "app crashes", "refund please"],
                  ["a", "b", "c", "d"])
    rows = classify_requests([r], emb, heads)
    by_key = {(row["item"], row["head_name"]): row for row in rows}
    # the empty text: one error row for the item, head NULL (the task names several heads)
    assert by_key[(1, None)]["status"] == "error" and by_key[(1, None)]["error"] == "'texts[1]' is empty"
    assert by_key[(1, None)]["request_id"] == "b"
    for item, text in [(0, "refund please"), (2, "app crashes"), (3, "refund please")]:
        for name in ("support", "sentiment"):
            row = by_key[(item, name)]
            assert_ok_row(row, heads[name])
            assert row["task_id"] == "m1" and row["text"] == text
            assert row["label"] == expected_label(heads[name], text)
    assert len(rows) == 7
    # the repeated text is embedded once
    assert sum(emb.calls) == 2


def test_embedding_is_chunked_but_rows_are_the_same(heads):
    texts = [f"message {i} about billing" for i in range(23)]
    r = multi_req("m2", ("support",), texts)
    one = FakeEmbedder(DIM)
    chunked = FakeEmbedder(DIM)
    a = classify_requests([r], one, heads)
    b = classify_requests([r], chunked, heads, chunk_size=5)
    assert one.calls == [23] and chunked.calls == [5, 5, 5, 5, 3]
    assert [(x["item"], x["label"], x["top3"]) for x in a] == [(x["item"], x["label"], x["top3"]) for x in b]


def test_a_broken_head_gets_error_rows_naming_it_and_others_are_served(heads):
    emb = FakeEmbedder(DIM)
    r = multi_req("m3", ("support", "legal"), ["refund please", "where is my parcel"])
    rows = classify_requests([r], emb, heads, broken={"legal": "v4: ValueError: unknown head config keys: ['x']"})
    legal = [row for row in rows if row["head_name"] == "legal"]
    assert len(legal) == 2 and all(row["status"] == "error" for row in legal)
    assert all("head 'legal' cannot be loaded: v4: ValueError" in row["error"] for row in legal)
    assert sorted(row["item"] for row in legal) == [0, 1]
    assert all(row["status"] == "ok" for row in rows if row["head_name"] == "support")


class FlakyEmbedder(FakeEmbedder):
    def __init__(self, message: str) -> None:
        super().__init__(DIM)
        self.message = message

    def embed_batch(self, texts):
        raise RuntimeError(self.message)


@pytest.mark.parametrize("message", ["CUDA out of memory. Tried to allocate 2.00 GiB", "operation timed out"])
def test_a_transient_embedder_failure_is_raised_not_written(heads, message):
    from embedclf.classify import EmbedderUnavailable

    with pytest.raises(EmbedderUnavailable, match="embedding failed"):
        classify_requests([req(0, "support", "hello"), req(1, "support", "there")], FlakyEmbedder(message), heads)


def test_an_embedder_that_fails_on_every_text_is_unavailable_not_a_text_error(heads):
    from embedclf.classify import EmbedderUnavailable

    with pytest.raises(EmbedderUnavailable, match="every text"):
        classify_requests([req(0, "support", "hello"), req(1, "support", "there")],
                          FlakyEmbedder("backend exploded"), heads)


def test_head_threads_are_restored(heads):
    before = torch.get_num_threads()
    classify_requests([req(0, "support", "hello")], FakeEmbedder(DIM), heads, head_threads=1)
    assert torch.get_num_threads() == before


def test_head_with_an_oos_score_abstains_on_the_discounted_confidence():
    """A worker applies a stored head's OOS score (kNN discount, heads/oos.py) from its stored weights and config."""
    import dataclasses

    from embedclf.heads.checkpoint import HeadArtifact

    emb = FakeEmbedder(DIM)
    head = loaded_head("support", ["billing", "bug", "oos"], seed=3)
    head.module.set_oos_score(emb.embed_batch([f"training text {i}" for i in range(30)]), k=3, beta=3.0)
    texts = [f"text number {i}" for i in range(8)] + [f"training text {i}" for i in range(8)]
    x = emb.embed_batch(texts)
    proba, disc = head.module.predict_proba(x), head.module.oos_discount(x)
    conf = proba.max(1) * disc
    threshold = float(np.median(conf))  # some rows answer, some abstain
    head.module.config = dataclasses.replace(head.module.config, abstain_threshold=threshold, oos_label="oos")
    # what the worker loads: the stored weights and config
    art = HeadArtifact.from_head(head.module, head.labels, head.embedder_id)
    stored = dataclasses.replace(head, module=art.build())
    rows = classify_requests([req(i, "support", t) for i, t in enumerate(texts)], emb, {"support": stored})
    expected = (conf < threshold) | (proba.argmax(1) == 2)
    assert [r["abstained"] for r in rows] == expected.tolist()
    assert 0 < expected.sum() < len(texts)
    # the top probability alone would decide differently for some rows: the score is really applied
    assert ((proba.max(1) < threshold) | (proba.argmax(1) == 2)).tolist() != expected.tolist()
    for r, p in zip(rows, proba):
        assert r["score"] == pytest.approx(float(p.max()), abs=1e-6)  # the row's score stays the top probability
        assert (r["label"] is None) == r["abstained"]
