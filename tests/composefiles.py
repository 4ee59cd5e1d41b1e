"""Parsing helpers and fixtures for the compose.yaml and docker/Dockerfile* tests."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")
yaml = pytest.importorskip("yaml")


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
