"""The ``machine`` block: what the figures were measured on."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import subprocess
from pathlib import Path

#: distribution name -> importable module; versions come from package metadata, so
#: reporting them imports nothing heavy (llama_cpp would load its shared library)
PACKAGES = {"torch": "torch", "sentence_transformers": "sentence_transformers", "llama_cpp": "llama_cpp",
            "onnxruntime": "onnxruntime"}
DISTRIBUTIONS = {"torch": "torch", "sentence_transformers": "sentence-transformers", "llama_cpp": "llama-cpp-python",
                 "onnxruntime": "onnxruntime"}
#: CPU flags that decide which int8 / fp32 kernels run (int8 speed differs a lot with VNNI)
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The :data:`SIMD_FLAGS` this CPU has."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "flags":
                have = set(value.split())
                return [f for f in SIMD_FLAGS if f in have]
    except OSError:
        pass
    return []


def gpu_name() -> str | None:
    """GPU name(s) from ``nvidia-smi -L``; None without a working nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    # "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)" -> "NVIDIA H100 80GB HBM3"
    names = [line.split(":", 1)[1].split("(UUID")[0].strip() for line in out.stdout.splitlines()
             if line.startswith("GPU ") and ":" in line]
    return "; ".join(names) or None


def package_version(key: str) -> str | None:
    """Version of an importable package, else None."""
    if importlib.util.find_spec(PACKAGES[key]) is None:
        return None
    try:
        return importlib.metadata.version(DISTRIBUTIONS[key])
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def machine_info(model_id: str | None) -> dict:
    info: dict = {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "gpu": gpu_name(),
        "python": platform.python_version(),
    }
    for key in PACKAGES:
        info[key] = package_version(key)
    info["embedder"] = model_id
    return info
