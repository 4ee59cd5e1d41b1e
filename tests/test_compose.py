"""compose.yaml and docker/Dockerfile* checked against the code they deploy.

No Docker engine is needed: the files are parsed and compared with the settings names
(``embedclf.config.env_names()``), the console scripts in pyproject.toml and the paths in
the repository. ``docker compose config`` runs too where the compose CLI is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from embedclf.config import Settings, env_names
from embedclf.embedders.spec import parse_spec
from tests.composefiles import (  # noqa: F401  (fixtures are used by name)
    COMPOSE,
    DUMMY_ENV,
    REPO,
    SERVICES,
    WORKERS,
    argv,
    compose,
    compose_text,
    depends_on,
    environment,
    option,
    pyproject,
    resolved_env,
    seconds,
    services,
)


def test_compose_parses_and_has_the_services(compose: dict, services: dict) -> None:
    assert SERVICES <= set(services), f"missing services: {SERVICES - set(services)}"
    # worker-cpu is opt-in; everything else (GPU worker included) runs on a plain `up`
    assert services["worker-cpu"].get("profiles") == ["cpu"]
    for name in SERVICES - {"worker-cpu"}:
        assert not services[name].get("profiles"), f"{name} should not be behind a profile"
    # every named volume a service mounts is declared
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for vol in svc.get("volumes") or []:
            source = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source!r}"


def test_every_embedclf_variable_is_a_real_setting(compose_text: str, services: dict) -> None:
    known = set(env_names())
    used = set(re.findall(r"\bEMBEDCLF_[A-Z0-9_]+", compose_text))
    assert used, "compose.yaml sets no EMBEDCLF_* variable at all"
    assert used <= known, f"not settings of embedclf.config: {sorted(used - known)}"
    # the same for the defaults baked into the images
    for dockerfile in (REPO / "docker").glob("Dockerfile*"):
        in_image = set(re.findall(r"\bEMBEDCLF_[A-Z0-9_]+", dockerfile.read_text()))
        assert in_image <= known, f"{dockerfile.name}: unknown {sorted(in_image - known)}"
    # a misspelled prefix (EMBEDCFL_..., EMBEDCLF-...) would slip past the regex above
    others_allowed = {"HF_TOKEN"}
    for name in (*WORKERS, "migrate"):
        keys = set(environment(services[name]))
        stray = {k for k in keys if not k.startswith("EMBEDCLF_")} - others_allowed
        assert not stray, f"{name}: variables embedclf does not read: {sorted(stray)}"


@pytest.mark.parametrize("name", [*WORKERS, "migrate"])
def test_service_environment_gives_valid_settings(name: str, services: dict) -> None:
    env = resolved_env(services[name])
    for key in ("EMBEDCLF_DATABASE_URL", "EMBEDCLF_BROKER_URL"):
        assert key in env, f"{name} lacks {key}"
    settings = Settings.from_env(env)  # converts types and validates ranges
    assert settings.database_url.startswith("postgresql+psycopg2://")


def test_urls_point_at_the_compose_services(services: dict) -> None:
    env = resolved_env(services["worker-gpu"])
    pg = environment(services["postgres"])
    db_url = env["EMBEDCLF_DATABASE_URL"]
    expected = (
        f"postgresql+psycopg2://{pg['POSTGRES_USER']}:{DUMMY_ENV['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{pg['POSTGRES_DB']}"
    )
    assert db_url == expected
    assert env["EMBEDCLF_BROKER_URL"] == f"redis://:{DUMMY_ENV['REDIS_PASSWORD']}@redis:6379/0"


def test_worker_commands(services: dict) -> None:
    for name in WORKERS:
        args = argv(services[name]["command"])
        assert args[:4] == ["celery", "-A", "worker.app", "worker"], f"{name}: {args}"
    gpu = argv(services["worker-gpu"]["command"])
    # CUDA and fork() do not mix: the GPU worker must not use the prefork pool
    assert option(gpu, "--pool", "-P") == "solo"
    assert option(gpu, "--concurrency", "-c") in (None, "1")


def test_celery_app_module_exists() -> None:
    app = REPO / "worker" / "app.py"
    if not app.exists():
        pytest.skip("worker/app.py is not written yet")
    # `celery -A worker.app` looks for an attribute `app` (or `celery`) in the module
    assert re.search(r"^(app|celery)\b\s*[:=]|^from\s.*\bimport\b.*\b(app|celery)\b", app.read_text(), re.M), (
        "worker/app.py binds no `app`"
    )


def test_workers_shut_down_warm_and_keep_models(services: dict) -> None:
    for name in WORKERS:
        svc = services[name]
        assert svc.get("stop_signal") == "SIGTERM", name
        assert seconds(svc.get("stop_grace_period", "10s")) > Settings().shutdown_timeout_s, name
        model_dir = resolved_env(svc)["EMBEDCLF_MODEL_DIR"]
        assert f"models:{model_dir}" in (svc.get("volumes") or []), name
        deps = depends_on(svc)
        assert deps.get("redis") == "service_healthy", name
        assert deps.get("migrate") == "service_completed_successfully", name


def test_gpu_worker_reserves_an_nvidia_gpu(services: dict) -> None:
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    nvidia = [d for d in devices if d.get("driver") == "nvidia"]
    assert len(nvidia) == 1, devices
    assert nvidia[0].get("count") == 1
    assert "gpu" in nvidia[0].get("capabilities", [])
    assert "deploy" not in services["worker-cpu"]


def test_worker_embedders(services: dict) -> None:
    gpu = resolved_env(services["worker-gpu"])
    cpu = resolved_env(services["worker-cpu"])
    gpu_spec = parse_spec(gpu["EMBEDCLF_EMBEDDER"])
    assert gpu["EMBEDCLF_EMBEDDER"].partition("?")[0] == "qwen3-embedding-8b"
    assert gpu_spec.kind == "llama" and gpu_spec.options.get("n_gpu_layers") == "-1"
    assert cpu["EMBEDCLF_EMBEDDER"] == Settings().embedder == "minilm-int8"  # the default, named
    assert parse_spec(cpu["EMBEDCLF_EMBEDDER"]).kind == "onnx"
    # the GPU packs more tokens into one forward pass than the CPU default
    gpu_tokens = Settings.from_env(gpu).batch.max_tokens
    assert gpu_tokens >= 8192 and gpu_tokens > Settings.from_env(cpu).batch.max_tokens
    # HF_TOKEN is optional: passed through (null value), never a required `${HF_TOKEN:?}`
    hf = environment(services["worker-gpu"]).get("HF_TOKEN")
    assert hf is None or re.fullmatch(r"\$\{HF_TOKEN(:?-[^}]*)?\}", str(hf)), hf


def test_migrate_runs_the_cli_once(services: dict, pyproject: dict) -> None:
    migrate = services["migrate"]
    assert argv(migrate["command"]) == ["embedclf", "db", "upgrade"]
    assert migrate.get("restart") == "no"  # a quoted "no": bare `no` is YAML false
    assert depends_on(migrate).get("postgres") == "service_healthy"
    assert pyproject["project"]["scripts"].get("embedclf") == "embedclf.entry:main"


def test_cli_module_exists(pyproject: dict) -> None:
    module = pyproject["project"]["scripts"]["embedclf"].split(":")[0]
    candidates = [REPO / (module.replace(".", "/") + ".py"), REPO / module.replace(".", "/") / "__init__.py"]
    if not any(p.exists() for p in candidates):
        pytest.skip(f"{module} is not written yet")


def test_redis_is_durable_and_password_protected(services: dict) -> None:
    redis = services["redis"]
    assert str(redis["image"]).startswith("redis:7")
    args = argv(redis["command"])
    assert option(args, "--appendonly") == "yes"
    password = option(args, "--requirepass")
    # `:?` makes compose refuse to start without the password instead of using ""
    assert password and re.fullmatch(r"\$\{REDIS_PASSWORD:\?[^}]*\}", password), password
    assert any(str(v).endswith(":/data") for v in redis.get("volumes", []))
    assert redis.get("healthcheck", {}).get("test"), "redis has no healthcheck"


def test_postgres_password_and_healthcheck(services: dict) -> None:
    pg = services["postgres"]
    assert str(pg["image"]).startswith("postgres:15")
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?[^}]*\}", str(environment(pg)["POSTGRES_PASSWORD"]))
    test = pg["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in pg.get("volumes", []))


# ---- the images --------------------------------------------------------------------------


def _compose(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    empty_env_file = tmp_path / "empty.env"  # ignore a developer's .env in the repo
    empty_env_file.write_text("")
    cmd = ["docker", "compose", "--env-file", str(empty_env_file), "-f", str(COMPOSE), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_docker_compose_config(tmp_path: Path) -> None:
    if shutil.which("docker") is None:
        pytest.skip("docker CLI not installed")
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    base = {k: v for k, v in os.environ.items() if k not in DUMMY_ENV}
    ok = _compose(["--profile", "cpu", "config", "-q"], {**base, **DUMMY_ENV}, tmp_path)
    if ok.returncode != 0 and re.search(r"docker daemon|docker engine", ok.stderr, re.I):
        pytest.skip(f"docker compose needs an engine here: {ok.stderr.strip()[:200]}")
    assert ok.returncode == 0, ok.stderr
    # and the required passwords really are required
    unset = _compose(["config", "-q"], {**base, "REDIS_PASSWORD": DUMMY_ENV["REDIS_PASSWORD"]}, tmp_path)
    assert unset.returncode != 0 and "POSTGRES_PASSWORD" in unset.stderr, unset.stderr
