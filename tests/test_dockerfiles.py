"""docker/Dockerfile* and .dockerignore checked against the repository they package."""

from __future__ import annotations

import fnmatch

from tests.composefiles import (  # noqa: F401  (fixtures are used by name)
    IMAGE_PATHS,
    REPO,
    base_images,
    built_dockerfiles,
    compose,
    compose_text,
    copy_sources,
    dockerfile_args,
    dockerfile_instructions,
    pyproject,
    services,
)


def test_dockerfiles_exist_and_copy_real_paths(services: dict) -> None:
    dockerfiles = built_dockerfiles(services)
    assert {"migrate", "worker-gpu", "worker-cpu"} <= set(dockerfiles)
    missing: set[str] = set()
    for name, path in dockerfiles.items():
        assert path.is_file(), f"{name}: {path} does not exist"
        sources = copy_sources(path)
        assert set(IMAGE_PATHS) <= set(sources), f"{path.name} copies {sources}"
        for src in sources:
            if not (REPO / src).exists():
                missing.add(src)
    assert not missing, f"COPY of paths that are not in the repo: {missing}"


def test_dockerfile_contents(pyproject: dict) -> None:
    torch_pin = next(d for d in pyproject["project"]["optional-dependencies"]["worker"] if d.startswith("torch"))
    version = torch_pin.split("==", 1)[1]
    images = {"Dockerfile": ["python:3.11-slim"] * 2,
              "Dockerfile.gpu": ["nvidia/cuda:12.6.3-devel-ubuntu24.04", "nvidia/cuda:12.6.3-runtime-ubuntu24.04"]}
    for name, expected_images in images.items():
        path = REPO / "docker" / name
        ins = dockerfile_instructions(path)
        text = path.read_text()
        assert base_images(path) == expected_images, name
        assert dockerfile_args(ins).get("TORCH_VERSION") == version, f"{name}: torch != pyproject pin"
        assert "https://download.pytorch.org/whl/cpu" in text
        assert 'pip install ".[worker,llama]"' in text
        # the last stage is what runs: non-root, /app, unbuffered logs
        last = max(i for i, (kw, _) in enumerate(ins) if kw == "FROM")
        final = ins[last:]
        assert ("USER", "embedclf") in final, name
        assert ("WORKDIR", "/app") in final, name
        assert any(kw == "ENV" and "PYTHONUNBUFFERED=1" in rest for kw, rest in final), name
    cpu_args = dockerfile_args(dockerfile_instructions(REPO / "docker" / "Dockerfile"))
    assert "-DGGML_NATIVE=OFF" in cpu_args["LLAMA_CMAKE_ARGS"]
    gpu_text = (REPO / "docker" / "Dockerfile.gpu").read_text()
    assert dockerfile_args(dockerfile_instructions(REPO / "docker" / "Dockerfile.gpu"))["CUDA_ARCHS"] == "80;86;89;90"
    assert "-DGGML_CUDA=on" in gpu_text and "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS}" in gpu_text


def test_dockerignore_keeps_context_small_but_complete() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ".git" in patterns and ".venv" in patterns
    for path in IMAGE_PATHS:
        hit = [p for p in patterns if not p.startswith("!") and fnmatch.fnmatch(path, p)]
        assert not hit, f".dockerignore drops {path}, which the images COPY: {hit}"


# ---- the real compose CLI, where installed -----------------------------------------------
