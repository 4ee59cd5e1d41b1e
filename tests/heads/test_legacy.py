"""A head stored before hybrid heads existed (format 1, MLP + linear member) loads and predicts unchanged.

``data/legacy_v1_head`` was written by ``HeadArtifact.save_dir`` at commit f85da8d (before the sparse
member): config.json + head.safetensors, plus ``expected.safetensors`` holding 10 inputs and the
probabilities that code predicted for them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from embedclf.heads.abstain import head_abstain_mask
from embedclf.heads.checkpoint import HeadArtifact

DATA = Path(__file__).parent / "data" / "legacy_v1_head"


def test_legacy_head_loads_and_predicts_identically():
    art = HeadArtifact.load_dir(DATA)
    expected = load_file(str(DATA / "expected.safetensors"))
    head = art.build()
    assert art.labels == ["a", "b", "c", "oos"] and art.embedder_id == "fake:8"
    assert head.config.linear_member and head.num_members == 2
    np.testing.assert_array_equal(head.predict_proba(expected["x"]), expected["proba"])
    # abstention settings stored with it still apply
    mask = head_abstain_mask(head.config, art.labels, expected["proba"])
    p = expected["proba"]
    np.testing.assert_array_equal(mask, (p.max(1) < 0.3) | (p.argmax(1) == 3))


def test_legacy_head_saves_back_byte_for_byte(tmp_path):
    art = HeadArtifact.load_dir(DATA)
    again = HeadArtifact.from_head(art.build(), art.labels, art.embedder_id)
    assert again.config == art.config
    np.testing.assert_array_equal(again.build().predict_proba(load_file(str(DATA / "expected.safetensors"))["x"]),
                                  load_file(str(DATA / "expected.safetensors"))["proba"])
