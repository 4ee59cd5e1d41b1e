"""One module of exception types; the CLI prints the project's own errors as one line, bugs keep a traceback."""

from __future__ import annotations

import importlib
import inspect

import click
import pytest
from click.testing import CliRunner

from embedclf import errors
from embedclf.cli.base import Group

#: where each type lived before errors.py: the old import paths keep working
OLD_HOMES = {
    "SpecError": "embedclf.embedders.spec",
    "ModelNotFoundError": "embedclf.embedders.download",
    "EmbedderUnavailable": "embedclf.classify",
    "EnqueueError": "embedclf.client",
    "BrokerUnavailable": "embedclf.client",
    "NotReplicated": "embedclf.client",
    "PayloadTooLarge": "embedclf.client",
    "ApiError": "embedclf.http.validate",
    "ServicesError": "embedclf.services",
    "DataError": "embedclf.data",
    "DatasetNotFound": "embedclf.store.datasets",
    "FeedbackError": "embedclf.store.datasets",
    "HeadNotFound": "embedclf.store.repository",
    "HeadStateError": "embedclf.store.repository",
    "DatabaseUnavailable": "embedclf.store.db",
    "PayloadError": "embedclf.payload",
    "BenchError": "embedclf.bench",
}


def _types() -> list[type]:
    return [t for _, t in inspect.getmembers(errors, inspect.isclass) if t.__module__ == errors.__name__]


def test_every_type_is_an_embedclf_error_defined_once():
    types = _types()
    assert len(types) >= 20
    assert all(issubclass(t, errors.EmbedclfError) for t in types)
    for name, module in OLD_HOMES.items():
        assert getattr(importlib.import_module(module), name) is getattr(errors, name), name


def test_stdlib_bases_are_kept_for_callers_that_catch_them():
    assert issubclass(errors.SpecError, ValueError)
    assert issubclass(errors.ModelNotFoundError, FileNotFoundError)
    assert issubclass(errors.HeadNotFound, LookupError)
    assert issubclass(errors.PayloadTooLarge, errors.EnqueueError) and issubclass(errors.PayloadTooLarge, ValueError)
    assert issubclass(errors.ConfigError, ValueError)


def _group(exc: BaseException) -> click.Group:
    group = Group()

    @group.command()
    def boom() -> None:
        raise exc

    return group


@pytest.mark.parametrize("exc", [errors.ConfigError("EMBEDCLF_X must be >= 1"),
                                 errors.DataError("f.csv: no column 'y'")])
def test_project_errors_are_one_line_with_exit_1(exc):
    result = CliRunner().invoke(_group(exc), ["boom"])
    assert result.exit_code == 1
    assert result.output == f"Error: {exc}\n"


@pytest.mark.parametrize("exc", [ValueError("a bug"), KeyError("k"), OSError("no filename: a bug too")])
def test_other_exceptions_are_bugs_and_keep_their_traceback(exc):
    result = CliRunner().invoke(_group(exc), ["boom"])
    assert result.exception is exc
    assert "Error:" not in result.output


def test_a_path_the_user_named_that_cannot_be_opened_is_one_line(tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "out.csv"
    try:
        open(missing, "w")
    except OSError as exc:
        raised = exc
    result = CliRunner().invoke(_group(raised), ["boom"])
    assert result.exit_code == 1
    assert result.output == f"Error: {missing}: No such file or directory\n"
