"""Pack / unpack all-MiniLM-L6-v2 for the GPU machine (carry limit 64 MiB): int8 rows + fp32 scales.

pack:   python minilm_pack.py pack SRC_MODEL_DIR OUT_DIR
unpack: python minilm_pack.py unpack OUT_DIR ST_DIR
"""
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file


def pack(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for p in src.rglob("*"):
        if p.is_file() and p.name != "model.safetensors" and p.suffix not in {".onnx", ".bin"}:
            dst = out / "files" / p.relative_to(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dst)
    arrays = {}
    for name, w in load_file(str(src / "model.safetensors")).items():
        w = w.astype(np.float32)
        if w.ndim == 2 and w.size > 4096:
            scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
            scale[scale == 0] = 1.0
            arrays["q|" + name] = np.round(w / scale).astype(np.int8)
            arrays["s|" + name] = scale.astype(np.float32)
        else:
            arrays["f|" + name] = w
    np.savez(out / "weights.npz", **arrays)


def unpack(packed: Path, st_dir: Path) -> None:
    shutil.copytree(packed / "files", st_dir, dirs_exist_ok=True)
    z = np.load(packed / "weights.npz")
    tensors = {}
    for key in z.files:
        kind, name = key.split("|", 1)
        if kind == "q":
            tensors[name] = z[key].astype(np.float32) * z["s|" + name]
        elif kind == "f":
            tensors[name] = z[key]
    save_file(tensors, str(st_dir / "model.safetensors"))


if __name__ == "__main__":
    {"pack": pack, "unpack": unpack}[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))
