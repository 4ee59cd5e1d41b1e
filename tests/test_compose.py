"""compose.yaml and docker/Dockerfile* checked against the code they deploy.

No Docker engine is needed: the files are parsed and compared with the settings names
(``embedclf.config.env_names()``), the console scripts in pyproject.toml and the paths in
the repository. ``docker compose config`` runs too where the compose CLI is installed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")
yaml = pytest.importorskip("yaml")

from embedclf.config import Settings, env_names  # noqa: E402
from embedclf.embedders.spec import parse_spec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "compose.yaml"
SERVICES = {"redis", "postgres", "migrate", "worker-gpu", "worker-cpu"}
WORKERS = ("worker-gpu", "worker-cpu")
#: what both images must copy into /app
IMAGE_PATHS = ("pyproject.toml", "README.md", "embedclf", "worker", "migrations", "alembic.ini")
#: dummy values for the variables compose.yaml requires (``${VAR:?msg}``)
DUMMY_ENV = {"POSTGRES_PASSWORD": "pg-test-secret", "REDIS_PASSWORD": "redis-test-secret"}

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?msg}, ${NAME?msg}
_INTERP = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE.read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict:
    data = yaml.safe_load(compose_text)
    assert isinstance(data, dict), "compose.yaml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# ---- helpers -----------------------------------------------------------------------------


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Resolve compose-style ``${...}`` references the way ``docker compose`` would."""
    env = DUMMY_ENV if env is None else env

    def sub(m: re.Match) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        present = name in env and (env[name] != "" or op not in (":-", ":?"))
        if present:
            return env[name]
        if op in ("-", ":-"):
            return arg
        if op in ("?", ":?"):
            raise KeyError(f"${{{name}}} is required: {arg}")
        return ""

    return _INTERP.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def argv(command: object) -> list[str]:
    """A service command as an argument list (compose accepts a list or a string)."""
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list), f"unexpected command {command!r}"
    return [str(a) for a in command]


def option(args: list[str], *names: str) -> str | None:
    """Value of a command-line option given as ``--opt value`` or ``--opt=value``."""
    for i, a in enumerate(args):
        for n in names:
            if a == n and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def environment(service: dict) -> dict[str, object]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE list form
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def resolved_env(service: dict) -> dict[str, str]:
    """A service's environment as the container would see it (pass-throughs left out)."""
    return {k: interpolate(str(v)) for k, v in environment(service).items() if v is not None}


def seconds(duration: object) -> float:
    """Compose duration (``60s``, ``1m30s``, ``90``) in seconds."""
    text = str(duration)
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # short form means service_started
        return {d: "service_started" for d in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, rest = buf.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buf = ""
    return out


def dockerfile_args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    args = {}
    for kw, rest in instructions:
        if kw == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value.strip('"')
    return args


def base_images(path: Path) -> list[str]:
    ins = dockerfile_instructions(path)
    args = dockerfile_args(ins)
    images = []
    for kw, rest in ins:
        if kw == "FROM":
            image = rest.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image))
    return images


def copy_sources(path: Path) -> list[str]:
    """Build-context paths a Dockerfile COPYs (``COPY --from=stage`` excluded)."""
    sources = []
    for kw, rest in dockerfile_instructions(path):
        if kw not in ("COPY", "ADD"):
            continue
        tokens = shlex.split(rest)
        if any(t.startswith("--from") for t in tokens):
            continue
        tokens = [t for t in tokens if not t.startswith("--")]
        sources += [t.rstrip("/") for t in tokens[:-1]]
    return sources


def built_dockerfiles(services: dict) -> dict[str, Path]:
    out = {}
    for name, svc in services.items():
        build = svc.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = REPO / build.get("context", ".")
        out[name] = context / build.get("dockerfile", "Dockerfile")
    return out


# ---- the compose file ------------------------------------------------------------------


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
    assert cpu["EMBEDCLF_EMBEDDER"] == "minilm"
    assert parse_spec(cpu["EMBEDCLF_EMBEDDER"]).kind == "st"
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
