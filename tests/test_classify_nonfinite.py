"""A vector or a score with a NaN or an infinity: an error row for that text, never a label without scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedclf.classify import NONFINITE, LoadedHead, classify_requests, embed_isolating
from embedclf.embedders.base import nonfinite_rows
from embedclf.embedders.fake import FakeEmbedder
from embedclf.errors import NonFiniteEmbedding
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.heads.multilabel import MultiLabelConfig, MultiLabelHead
from embedclf.payload import ClassifyRequest
from tests.helpers import loaded_head, req

DIM = 32


class NanEmbedder(FakeEmbedder):
    """A model that overflows on some inputs: 'NAN' in a text gives NaNs, 'INF' one infinity; 'BOOM' raises."""

    def embed_batch(self, texts):
        if any("BOOM" in t for t in texts):
            raise RuntimeError("backend exploded")
        out = super().embed_batch(texts)
        for i, t in enumerate(texts):
            if "NAN" in t:
                out[i] = np.nan
            if "INF" in t:
                out[i, 3] = -np.inf
        return out


def test_nonfinite_rows_finds_nan_and_both_infinities():
    v = np.zeros((5, 4), dtype=np.float32)
    assert nonfinite_rows(v).tolist() == []
    v[1, 2], v[3, 0], v[4, 3] = np.nan, np.inf, -np.inf
    assert nonfinite_rows(v).tolist() == [1, 3, 4]


def test_a_nonfinite_vector_is_an_error_row_and_the_other_texts_are_served():
    head = loaded_head("support", ["billing", "bug", "shipping", "account"], seed=1)
    texts = ["fine one", "this NAN text", "fine two", "an INF text", "fine three"]
    emb = NanEmbedder(DIM)
    rows = classify_requests([req(i, "support", t) for i, t in enumerate(texts)], emb, {"support": head})
    assert [r["status"] for r in rows] == ["ok", "error", "ok", "error", "ok"]
    assert emb.calls == [5]  # found in the batch's own result: no text is embedded again
    for i in (1, 3):
        assert rows[i]["error"] == NONFINITE
        assert rows[i]["request_id"] == f"r{i}" and rows[i]["head_name"] == "support"
        assert "label" not in rows[i] and "top3" not in rows[i] and "text" not in rows[i]
    clean = FakeEmbedder(DIM).embed_batch([texts[i] for i in (0, 2, 4)])
    expected = head.module.predict_proba(clean).argmax(axis=1)
    assert [rows[i]["label"] for i in (0, 2, 4)] == [head.labels[j] for j in expected]
    assert all(len(rows[i]["top3"]) == 3 and np.isfinite(rows[i]["score"]) for i in (0, 2, 4))


def test_a_batch_whose_every_vector_is_nan_gets_error_rows_not_a_retry():
    head = loaded_head("support", ["a", "b", "c"])
    rows = classify_requests([req(0, "support", "NAN a"), req(1, "support", "NAN b")], NanEmbedder(DIM),
                             {"support": head})
    assert [(r["status"], r["error"]) for r in rows] == [("error", NONFINITE)] * 2


def test_the_one_by_one_path_also_finds_nonfinite_vectors():
    vecs, failed = embed_isolating(NanEmbedder(DIM), ["a", "BOOM", "c NAN", "d"])
    assert sorted(failed) == [1, 2]
    assert "backend exploded" in failed[1] and failed[2] == NONFINITE
    np.testing.assert_allclose(vecs[[0, 3]], FakeEmbedder(DIM).embed_batch(["a", "d"]), atol=1e-7)


class NanAt:
    """Mixin: NaN probabilities for inputs equal to the vector of ``POISON`` (a head that overflows on it)."""

    POISON = "poison text"

    def predict_proba(self, x, *args, **kwargs):
        p = np.array(super().predict_proba(x, *args, **kwargs))
        target = FakeEmbedder(DIM).embed_batch([self.POISON])[0]
        p[np.all(np.isclose(np.asarray(x), target), axis=1)] = np.nan
        return p


class NanMLP(NanAt, MLPHead):
    pass


class NanMultiLabel(NanAt, MultiLabelHead):
    pass


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_a_head_whose_scores_are_not_finite_gives_an_error_row_for_that_text_only(kind):
    torch.manual_seed(0)
    if kind == "single":
        module = NanMLP(HeadConfig(input_dim=DIM, num_labels=3, hidden_dim=16, num_layers=2))
    else:
        module = NanMultiLabel(MultiLabelConfig(input_dim=DIM, num_labels=3, hidden_dim=16, linear_member=False))
    module.eval()
    head = LoadedHead(name="h", version=7, embedder_id="fake:32", labels=["x", "y", "z"], module=module)
    other = loaded_head("other", ["p", "q", "r"], seed=3)
    texts = ["fine", NanAt.POISON, "also fine"]
    requests = [ClassifyRequest(task_id=f"t{i}", head=None, text=t, request_id=f"r{i}", heads=("h", "other"))
                for i, t in enumerate(texts)]
    rows = classify_requests(requests,
                             FakeEmbedder(DIM), {"h": head, "other": other})
    by = {(r["task_id"], r["head_name"]): r for r in rows}
    bad = by[("t1", "h")]
    assert bad["status"] == "error" and bad["head_version"] == 7
    assert bad["error"] == "head 'h' v7 gave scores with a NaN or an infinity for this text"
    assert "label" not in bad and "top3" not in bad and "labels" not in bad
    assert by[("t1", "other")]["status"] == "ok"  # the same text under another head is served
    assert all(by[(f"t{i}", "h")]["status"] == "ok" for i in (0, 2))


def test_embed_raises_a_one_line_error_naming_the_first_bad_text():
    texts = ["a", "bb", "x NAN y", "ccc", "z NAN"]
    with pytest.raises(NonFiniteEmbedding) as info:
        NanEmbedder(DIM).embed(texts)
    msg = str(info.value)
    assert "\n" not in msg
    assert "fake:32" in msg and "for 2 text(s)" in msg and "text 3 of 5: 'x NAN y'" in msg
    assert isinstance(info.value, ValueError)  # callers catching ValueError keep working
