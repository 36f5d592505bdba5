"""The database engine: SQLite in WAL mode by default, any SQLAlchemy URL otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import create_engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str, *, migrate: bool = True) -> Engine:
    """Create the engine and bring the schema to the newest revision (keeping every row)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if migrate:
        upgrade(engine)
    return engine


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply Alembic migrations up to `revision`, under a lock where the database has one."""
    # Every subsystem's tables, registered for the migrations.
    import gateway.approvals.models
    import gateway.audit.models
    import gateway.control.models  # noqa: F401
    import sandbox_net.models  # noqa: F401
    import vault.models  # noqa: F401

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # several gateways may start at once against one database
            connection.execute(text("SELECT pg_advisory_xact_lock(7312001)"))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
