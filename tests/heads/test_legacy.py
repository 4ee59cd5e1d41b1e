"""A head stored before hybrid heads existed (format 1, MLP + linear member) loads and predicts unchanged.

``data/legacy_v1_head`` was written by ``HeadArtifact.save_dir`` at commit f85da8d (before the sparse
member): config.json + head.safetensors, plus ``expected.safetensors`` holding 10 inputs and the
probabilities that code predicted for them. The two safetensors files are kept base64-encoded in
``blobs.json`` (no binary weights in git) and written back to a temporary directory by the fixture.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from embedclf.heads.abstain import head_abstain_mask
from embedclf.heads.checkpoint import HeadArtifact

SOURCE = Path(__file__).parent / "data" / "legacy_v1_head"


@pytest.fixture
def legacy_dir(tmp_path: Path) -> Path:
    """The legacy head directory as ``save_dir`` wrote it: config.json, head.safetensors, expected.safetensors."""
    out = tmp_path / "legacy_v1_head"
    out.mkdir()
    shutil.copy(SOURCE / "config.json", out / "config.json")
    blobs = json.loads((SOURCE / "blobs.json").read_text())
    for name in ("head.safetensors", "expected.safetensors"):
        (out / name).write_bytes(base64.b64decode(blobs[name]))
    return out


#: the stored probabilities were computed on another CPU: matrix kernels differ between CPUs (AVX2,
#: AVX-512, oneDNN paths) in the last bits of a float32, so predictions agree to float32 rounding, and
#: the weights themselves must load bit for bit
PROBA_TOL = {"rtol": 1e-5, "atol": 1e-6}


def _stored_weights(legacy_dir: Path) -> dict[str, np.ndarray]:
    return load_file(str(legacy_dir / "head.safetensors"))


def test_legacy_head_loads_and_predicts_identically(legacy_dir):
    art = HeadArtifact.load_dir(legacy_dir)
    expected = load_file(str(legacy_dir / "expected.safetensors"))
    head = art.build()
    assert art.labels == ["a", "b", "c", "oos"] and art.embedder_id == "fake:8"
    assert head.config.linear_member and head.num_members == 2
    state = {k: v.detach().numpy() for k, v in head.state_dict().items()}
    stored = _stored_weights(legacy_dir)
    assert set(stored) <= set(state)
    for name, value in stored.items():  # every stored tensor loaded exactly
        np.testing.assert_array_equal(state[name], value, err_msg=name)
    np.testing.assert_allclose(head.predict_proba(expected["x"]), expected["proba"], **PROBA_TOL)
    assert (head.predict_proba(expected["x"]).argmax(1) == expected["proba"].argmax(1)).all()
    # abstention settings stored with it still apply
    mask = head_abstain_mask(head.config, art.labels, expected["proba"])
    p = expected["proba"]
    np.testing.assert_array_equal(mask, (p.max(1) < 0.3) | (p.argmax(1) == 3))


def test_legacy_head_saves_back_byte_for_byte(legacy_dir, tmp_path):
    art = HeadArtifact.load_dir(legacy_dir)
    again = HeadArtifact.from_head(art.build(), art.labels, art.embedder_id)
    assert again.config == art.config
    again.save_dir(tmp_path / "again")
    resaved, stored = load_file(str(tmp_path / "again" / "head.safetensors")), _stored_weights(legacy_dir)
    assert set(resaved) == set(stored)
    for name, value in stored.items():
        np.testing.assert_array_equal(resaved[name], value, err_msg=name)
    expected = load_file(str(legacy_dir / "expected.safetensors"))
    np.testing.assert_allclose(again.build().predict_proba(expected["x"]), expected["proba"], **PROBA_TOL)
