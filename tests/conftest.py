"""Shared fixtures: a fresh, migrated store on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store.db import create_engine
from bridge.store.migrate import upgrade

PG_HOST = os.environ.get("SKOLEBRO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
EXAMPLE_ROSTER = REPO / "tests" / "data" / "example.csv"


def _pg_url(dbname: str) -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{dbname}"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_HOST)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database, made once per test process through the real server."""
    name = f"skolebro_tpl_{uuid.uuid4().hex[:10]}"

    async def make() -> None:
        await _admin(f'CREATE DATABASE "{name}"')
        engine = create_engine(_pg_url(name))
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(make())
    yield name
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh migrated database URL: a SQLite file, or a PostgreSQL copy of the template."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'skolebro.db'}"

        async def make_sqlite() -> None:
            engine = create_engine(url)
            await upgrade(engine)
            await engine.dispose()

        asyncio.run(make_sqlite())
        yield url
        return
    template = request.getfixturevalue("pg_template")
    name = f"skolebro_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield _pg_url(name)
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()
