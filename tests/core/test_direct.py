"""Statements run on the DBAPI cursor behave as SQLAlchemy's execute would, on both backends."""

import pytest
import sqlalchemy.exc
from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, bindparam, select

from loopstack.core.direct import UnsupportedStatement
from loopstack.core.project import Project

METADATA = MetaData()
THINGS = Table(
    "direct_things",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(32), nullable=False, unique=True),
    Column("doc", JSON, nullable=True),
)
DEFAULTED = Table(
    "direct_defaulted", METADATA, Column("id", Integer, primary_key=True), Column("note", String(8), default="")
)


@pytest.fixture
def db(project: Project):  # type: ignore[no-untyped-def]
    METADATA.create_all(project.db.engine)
    yield project.db
    METADATA.drop_all(project.db.engine)


def test_insert_many_applies_bind_processors_and_update_binds_by_name(db) -> None:  # type: ignore[no-untyped-def]
    insert = db.direct(THINGS.insert(), columns=("name", "doc"))
    rename = db.direct(THINGS.update().where(THINGS.c.name == bindparam("old")).values(name=bindparam("new")))
    with db.write() as connection:
        insert.execute_many(connection, [{"name": "a", "doc": {"x": [1, 2]}}, {"name": "b", "doc": None}])
        rename.execute(connection, {"old": "b", "new": "c"})
    with db.read() as connection:
        rows = connection.execute(select(THINGS.c.name, THINGS.c.doc).order_by(THINGS.c.id)).all()
    assert [tuple(row) for row in rows] == [("a", {"x": [1, 2]}), ("c", None)]


def test_insert_returns_the_new_id(db) -> None:  # type: ignore[no-untyped-def]
    statement = THINGS.insert()
    if db.engine.dialect.insert_returning:
        statement = statement.returning(THINGS.c.id)
    insert = db.direct(statement, columns=("name",))
    with db.write() as connection:
        first = insert.execute(connection, {"name": "a"})
        second = insert.execute(connection, {"name": "b"})
    assert (first, second) == (1, 2)


def test_driver_errors_surface_as_sqlalchemy_errors(db) -> None:  # type: ignore[no-untyped-def]
    insert = db.direct(THINGS.insert(), columns=("name",))
    with pytest.raises(sqlalchemy.exc.IntegrityError), db.write() as connection:
        insert.execute_many(connection, [{"name": "same"}, {"name": "same"}])
    with db.read() as connection:
        assert connection.execute(select(THINGS.c.id)).all() == []  # the transaction rolled back


def test_statements_that_need_sqlalchemy_at_execution_are_refused(db) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnsupportedStatement, match="Python-side default"):
        db.direct(DEFAULTED.insert(), columns=("id",))
    with pytest.raises(UnsupportedStatement, match="expanding"):
        db.direct(THINGS.delete().where(THINGS.c.name.in_(bindparam("names", expanding=True))))


def test_upsert_falls_back_to_sqlalchemy_for_defaulted_columns(db) -> None:  # type: ignore[no-untyped-def]
    with db.write() as connection:
        db.upsert(connection, DEFAULTED, [{"id": 1}], keys=("id",), update=())
        db.upsert(connection, THINGS, [{"name": "a", "doc": [1]}], keys=("name",), update=("doc",))
        db.upsert(connection, THINGS, [{"name": "a", "doc": [2]}], keys=("name",), update=("doc",))
    with db.read() as connection:
        assert connection.execute(select(DEFAULTED.c.note)).scalar_one() == ""
        assert connection.execute(select(THINGS.c.doc)).scalar_one() == [2]
