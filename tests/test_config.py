"""Settings from EMBEDCLF_* environment variables; URL masking."""

from __future__ import annotations

from dataclasses import fields
from urllib.parse import urlsplit

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from embedclf.config import DEFAULT_EMBEDDER, SECRET_FIELDS, BatchSettings, Settings, env_names, mask_url, redact


def test_defaults():
    s = Settings()
    assert s.queue == "celery"
    assert s.embedder == "minilm-int8" == DEFAULT_EMBEDDER
    assert s.max_text_chars == 20_000
    assert s.head_refresh_s == 2.0
    assert s.visibility_timeout_s == 3600
    assert s.log_level == "INFO"
    assert s.batch == BatchSettings(max_size=256, max_wait_ms=50, max_tokens=4096)
    assert s.database_url.startswith("postgresql")
    assert s.broker_url.startswith("redis://")
    s.validate()  # defaults are valid


def test_empty_environment_gives_defaults():
    assert Settings.from_env({}) == Settings()


def test_env_parsing_with_types():
    env = {
        "EMBEDCLF_DATABASE_URL": "postgresql+psycopg2://u:pw@db:5432/x",
        "EMBEDCLF_BROKER_URL": "redis://:secret@r:6379/2",
        "EMBEDCLF_QUEUE": "classify",
        "EMBEDCLF_EMBEDDER": "gemma",
        "EMBEDCLF_MAX_TEXT_CHARS": "1234",
        "EMBEDCLF_HEAD_REFRESH_S": "0.5",
        "EMBEDCLF_VISIBILITY_TIMEOUT_S": "120",
        "EMBEDCLF_MODEL_DIR": "/models",
        "EMBEDCLF_LOG_LEVEL": "DEBUG",
        "EMBEDCLF_BATCH_MAX_SIZE": "8",
        "EMBEDCLF_BATCH_MAX_WAIT_MS": "0",
        "EMBEDCLF_BATCH_MAX_TOKENS": "512",
    }
    s = Settings.from_env(env)
    assert s.database_url == env["EMBEDCLF_DATABASE_URL"]
    assert s.broker_url == env["EMBEDCLF_BROKER_URL"]
    assert (s.queue, s.embedder, s.model_dir, s.log_level) == ("classify", "gemma", "/models", "DEBUG")
    assert s.max_text_chars == 1234 and isinstance(s.max_text_chars, int)
    assert s.head_refresh_s == 0.5 and isinstance(s.head_refresh_s, float)
    assert s.visibility_timeout_s == 120
    assert s.batch == BatchSettings(max_size=8, max_wait_ms=0, max_tokens=512)


def test_partial_batch_env_keeps_other_batch_defaults():
    s = Settings.from_env({"EMBEDCLF_BATCH_MAX_WAIT_MS": "200"})
    assert s.batch == BatchSettings(max_wait_ms=200)


def test_unrelated_variables_ignored():
    s = Settings.from_env({"EMBEDCLF_NOT_A_SETTING": "x", "QUEUE": "other", "embedclf_queue": "lower"})
    assert s == Settings()


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("EMBEDCLF_QUEUE", "from-os-env")
    monkeypatch.setenv("EMBEDCLF_BATCH_MAX_SIZE", "3")
    s = Settings.from_env()
    assert s.queue == "from-os-env" and s.batch.max_size == 3


@pytest.mark.parametrize(
    "name, value",
    [
        ("EMBEDCLF_MAX_TEXT_CHARS", "lots"),
        ("EMBEDCLF_MAX_TEXT_CHARS", "0"),
        ("EMBEDCLF_HEAD_REFRESH_S", "soon"),
        ("EMBEDCLF_VISIBILITY_TIMEOUT_S", "4"),
        ("EMBEDCLF_VISIBILITY_TIMEOUT_S", "1.5"),
        ("EMBEDCLF_BATCH_MAX_SIZE", "0"),
        ("EMBEDCLF_BATCH_MAX_SIZE", "sixty"),
        ("EMBEDCLF_BATCH_MAX_WAIT_MS", "-1"),
        ("EMBEDCLF_BATCH_MAX_WAIT_MS", "2.5"),
        ("EMBEDCLF_BATCH_MAX_TOKENS", "15"),
        ("EMBEDCLF_BATCH_MAX_TOKENS", ""),
        ("EMBEDCLF_GIL_SWITCH_MS", "-1"),
        ("EMBEDCLF_GIL_SWITCH_MS", "nan"),
        ("EMBEDCLF_GIL_SWITCH_MS", "5000"),
        ("EMBEDCLF_TEXT_THREADS", "0"),
        ("EMBEDCLF_TEXT_THREADS", "65"),
        ("EMBEDCLF_TEXT_THREADS", "two"),
    ],
)
def test_bad_values_raise_naming_the_variable(name, value):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})


def test_env_names_lists_every_setting():
    names = env_names()
    assert len(names) == len(set(names))
    plain = {f.name for f in fields(Settings)} - {"batch"}
    assert set(names) == {f"EMBEDCLF_{n.upper()}" for n in plain} | {
        f"EMBEDCLF_BATCH_{f.name.upper()}" for f in fields(BatchSettings)
    }
    for expected in ("EMBEDCLF_DATABASE_URL", "EMBEDCLF_BROKER_URL", "EMBEDCLF_BATCH_MAX_WAIT_MS"):
        assert expected in names


def _valid_non_default(name: str, default: object) -> str:
    if isinstance(default, bool):
        return str(not default)
    if isinstance(default, int):
        return str(default * 2 + 1)
    if isinstance(default, float):
        return str(default * 2 + 1)
    if name == "EMBEDCLF_DATABASE_URL":
        return "postgresql+psycopg2://changed@changed-host:1234/changed"
    if name.endswith("_URL"):
        return "redis://changed-host:1234/5"
    return f"changed-{name.lower()}"


def test_every_env_name_is_actually_read():
    defaults = Settings().describe()
    for name in env_names():
        key = name.removeprefix("EMBEDCLF_").lower()
        if key.startswith("batch_"):
            key = "batch." + key.removeprefix("batch_")
        value = _valid_non_default(name, defaults[key])
        settings = Settings.from_env({name: value})
        described = settings.describe()
        if key in SECRET_FIELDS:  # read, but never shown
            assert getattr(settings, key) == value and described[key] == "***", name
            assert value not in repr(settings), name
        else:
            assert str(described[key]) == value, name
        assert described[key] != defaults[key], name


# --- URL masking --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, masked",
    [
        ("redis://:secret@h/0", "redis://:***@h/0"),
        ("redis://:secret@redis.local:6379/0", "redis://:***@redis.local:6379/0"),
        (
            "postgresql+psycopg2://app:hunter2@db:5432/embedclf?sslmode=require",
            "postgresql+psycopg2://app:***@db:5432/embedclf?sslmode=require",
        ),
        ("redis://:p%40ss%3Aword@h:1/0", "redis://:***@h:1/0"),
    ],
)
def test_mask_url_hides_password(url, masked):
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "postgresql+psycopg2://postgres@127.0.0.1:5432/embedclf", "not a url", ""],
)
def test_mask_url_leaves_passwordless_urls_alone(url):
    assert mask_url(url) == url


def test_mask_url_unreadable_host_is_hidden():
    assert mask_url("http://[::1") == "http://***"


def test_mask_url_keeps_ipv6_host_parseable():
    masked = mask_url("postgresql://u:pw@[::1]:5432/db")
    assert "pw" not in masked
    parts = urlsplit(masked)
    assert (parts.hostname, parts.port) == ("::1", 5432)


@pytest.mark.parametrize("url", ["redis://:pw@h:99999/0", "redis://:pw@h:abc/0"])
def test_mask_url_never_raises_or_leaks_on_bad_port(url):
    masked = mask_url(url)
    assert "pw" not in masked


@pytest.mark.parametrize(
    "url, masked",
    [
        # raw "/", "#", "?" in a userinfo password (SQLAlchemy reads them as part of the password)
        ("postgresql+psycopg2://app:sl/ash@db:5432/x", "postgresql+psycopg2://app:***@db:5432/x"),
        ("redis://:ha#sh@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://:qu?ery@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql://u:a@b/c@h/db", "postgresql://u:***@h/db"),  # raw "@" too: up to the last "@"
        # the password as a query parameter (redis-py and libpq read it)
        ("redis://h:6379/0?password=s3cret", "redis://h:6379/0?password=***"),
        ("postgresql://u@h/db?sslmode=require&password=s%2F3&x=1", "postgresql://u@h/db?sslmode=require&password=***&x=1"),
        ("redis://h/0?Sentinel_Password=abc", "redis://h/0?Sentinel_Password=***"),
        # kombu's ";"-separated list (sentinel, failover) and libpq's multi-host form
        ("sentinel://:pw1@s1:26379;sentinel://:pw2@s2:26379/0",
         "sentinel://:***@s1:26379;sentinel://:***@s2:26379/0"),
        ("postgresql://u:pw@h1:5432,h2:5433/db", "postgresql://u:***@h1:5432,h2:5433/db"),
        # a piece urllib would take for a port is hidden; so is a libpq key=value password
        ("redis://:sl/ash", "redis://***/ash"),
        ("host=db password='a b' user=x", "host=db password=*** user=x"),
    ],
)
def test_mask_url_hides_every_form(url, masked):
    assert mask_url(url) == masked


PW_CHARS = "abcXYZ019/#?@:%;&=+!$ ~-._[]"


@settings(max_examples=400, deadline=None)
@given(password=st.text(alphabet=PW_CHARS, min_size=1, max_size=20),
       template=st.sampled_from(["redis://:{raw}@h:6379/0", "redis://user:{raw}@h/1",
                                 "postgresql+psycopg2://app:{raw}@db:5432/x?sslmode=require",
                                 "redis://:{enc}@h:6379/0", "rediss://h:6380/0?ssl_cert_reqs=required&password={enc}",
                                 "postgresql://app@db/x?password={enc}",
                                 "sentinel://:{enc}@s1:26379;sentinel://:{enc}@s2:26379",
                                 "postgresql://app:{enc}@h1:5432,h2:5432/x"]))
def test_mask_url_property_no_password_survives(password, template):
    """Whatever the password holds, neither it nor its encoded form survives masking."""
    from urllib.parse import quote

    if "{raw}" in template:  # raw in userinfo: "@" would end the userinfo for SQLAlchemy, "%" is decoded
        assume("@" not in password and "%" not in password)
    enc = quote(password, safe="")
    url = template.format(raw=password, enc=enc)
    masked = mask_url(url)
    skeleton = template.format(raw="", enc="")
    for needle in {password, enc}:
        assume(needle not in skeleton)  # a password like "h" is in the host name anyway
        assert needle not in masked, (url, masked)
    assert "***" in masked


def test_redact_hides_pieces_a_parser_quoted():
    url = "redis://:abcd1234/efgh5678@127.0.0.1:1/0"
    message = ("cannot reach redis://:abcd1234/efgh5678@127.0.0.1:1/0: "
               "Port could not be cast to integer value as 'abcd1234'")
    out = redact(message, url)
    assert "abcd1234" not in out and "efgh5678" not in out
    assert out.startswith("cannot reach redis://:***@127.0.0.1:1/0: ")


def test_redact_hides_a_secret_cut_short():
    """Messages cut to length (``str(exc)[:200]``) may end inside the password."""
    url = "redis://:Zq8vLm3pXw7@h:1/0"
    out = redact("cannot connect (AUTH Zq8vLm3p). Start Redis ...", url)
    assert "Zq8vLm" not in out and out == "cannot connect (AUTH ***). Start Redis ..."


def test_metrics_bind_loopback_by_default():
    assert Settings().metrics_addr == "127.0.0.1"
    assert Settings.from_env({"EMBEDCLF_METRICS_ADDR": "0.0.0.0"}).metrics_addr == "0.0.0.0"


def test_describe_masks_secrets_and_flattens_batch():
    s = Settings(database_url="postgresql://app:topsecret@db/x", broker_url="redis://:alsosecret@r:6379/0")
    d = s.describe()
    assert "topsecret" not in str(d) and "alsosecret" not in str(d)
    assert d["database_url"] == "postgresql+psycopg2://app:***@db/x"  # postgresql:// means psycopg2
    assert d["broker_url"] == "redis://:***@r:6379/0"
    assert d["batch.max_size"] == 256 and d["batch.max_wait_ms"] == 50 and d["batch.max_tokens"] == 4096
    assert "batch" not in d
    assert d["queue"] == "celery"
    # the settings object itself keeps the real URL
    assert s.database_url == "postgresql+psycopg2://app:topsecret@db/x"


def test_api_token_is_read_masked_and_checked():
    s = Settings.from_env({"EMBEDCLF_API_TOKEN": "tok-0123456789abcdef"})
    assert s.api_token == "tok-0123456789abcdef"
    assert "tok-0123456789abcdef" not in repr(s) and "tok-0123456789abcdef" not in str(s.describe())
    assert s.describe()["api_token"] == "***" and Settings().describe()["api_token"] == ""
    for bad in ("two words", "tab\there", "trailing\n", "caf\u00e9"):
        with pytest.raises(ValueError, match="EMBEDCLF_API_TOKEN"):
            Settings.from_env({"EMBEDCLF_API_TOKEN": bad})


def test_with_overrides_is_a_copy():
    s = Settings()
    t = s.with_overrides(queue="other")
    assert t.queue == "other" and s.queue == "celery"
    with pytest.raises(TypeError):
        s.with_overrides(nonexistent=1)


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_head_refresh_must_be_positive(value):
    with pytest.raises(ValueError, match="EMBEDCLF_HEAD_REFRESH_S"):
        Settings.from_env({"EMBEDCLF_HEAD_REFRESH_S": value})


@pytest.mark.parametrize("value", ["0", "65", "two"])
def test_worker_processes_are_between_1_and_64(value):
    with pytest.raises(ValueError, match="EMBEDCLF_WORKER_PROCESSES"):
        Settings.from_env({"EMBEDCLF_WORKER_PROCESSES": value})
    assert Settings.from_env({"EMBEDCLF_WORKER_PROCESSES": "4"}).worker_processes == 4


@pytest.mark.parametrize("var, value, fragment", [
    ("EMBEDCLF_DATABASE_URL", "mysql://u:secret@h/db", "EMBEDCLF_DATABASE_URL must be a PostgreSQL URL"),
    ("EMBEDCLF_DATABASE_URL", "postgresql://u:secret@h:notaport/db", "EMBEDCLF_DATABASE_URL is not a valid URL"),
    ("EMBEDCLF_BROKER_URL", "http://u:secret@h:80/", "EMBEDCLF_BROKER_URL must be a Redis URL"),
    ("EMBEDCLF_BROKER_URL", "sentinel://a:1;redis://b:2", "EMBEDCLF_BROKER_URL must be a Redis URL"),
    # an unencoded / ? # in the password: redis-py would read no host (localhost:6379, DB 0) and never say so
    ("EMBEDCLF_BROKER_URL", "redis://:/secret-pw@10.0.0.5:6379/3", "holds an unencoded '/', '?' or '#'"),
    ("EMBEDCLF_BROKER_URL", "redis://:?secret-pw@10.0.0.5:6379/3", "holds an unencoded '/', '?' or '#'"),
    ("EMBEDCLF_BROKER_URL", "rediss://:#secret-pw@10.0.0.5:6379/3", "holds an unencoded '/', '?' or '#'"),
    ("EMBEDCLF_BROKER_URL", "redis://:12/secret-pw@10.0.0.5:6379/3", "holds an unencoded '/', '?' or '#'"),
    ("EMBEDCLF_BROKER_URL", "sentinel://:/secret-pw@a:26379;sentinel://b:26379", "holds an unencoded"),
])
def test_unusable_urls_name_their_variable_in_one_line(var, value, fragment):
    with pytest.raises(ValueError) as info:
        Settings.from_env({var: value})
    msg = str(info.value)
    assert fragment in msg and "\n" not in msg and "secret" not in msg


def test_broker_urls_with_an_at_sign_where_redis_clients_allow_it_are_accepted():
    for url in ("redis://:p%2Fw@10.0.0.5:6379/3", "redis://u:p@10.0.0.5:6379/3", "redis://10.0.0.5:6379/3?password=a@b",
                "redis://", "redis://localhost"):
        assert Settings.from_env({"EMBEDCLF_BROKER_URL": url}).broker_url == url


def test_postgres_urls_in_the_common_forms_mean_psycopg2():
    for url in ("postgres://u@h/db", "postgresql://u@h/db", "postgresql+psycopg2://u@h/db"):
        assert Settings.from_env({"EMBEDCLF_DATABASE_URL": url}).database_url == "postgresql+psycopg2://u@h/db"
    assert Settings.from_env({"EMBEDCLF_BROKER_URL": "sentinel://a:1;sentinel://b:2"}).broker_url.startswith("sentinel")


def test_the_settings_page_is_current():
    """docs/settings.md is generated from the settings object: regenerate it when a setting changes."""
    from pathlib import Path

    from embedclf.settings_doc import markdown

    page = (Path(__file__).resolve().parents[1] / "docs" / "settings.md").read_text()
    assert page == markdown(), "docs/settings.md is stale: python -m embedclf.settings_doc > docs/settings.md"
    from embedclf.config import env_names

    assert all(f"`{name}`" in page for name in env_names())
    assert all(note for _, _, note in __import__("embedclf.settings_doc").settings_doc.rows())
