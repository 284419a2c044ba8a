"""Suite results kept as ``quality.suite`` events, and read back as `SuiteResult` objects.

The event log is the one place the loop engine, the UI and ``loopstack
events`` look for signals, so a failed check is a row there (subject: the
suite's name) rather than in a table of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loopstack.quality.results import SuiteResult

if TYPE_CHECKING:
    from loopstack.core.project import Project

EVENT_KIND = "quality.suite"


def record(project: Project, result: SuiteResult, cause: int | None = None) -> int:
    """Store a suite result as a ``quality.suite`` event; sets and returns ``result.event_id``.

    Examples
    --------
    >>> import tempfile
    >>> from loopstack.core.project import Project
    >>> from loopstack.quality import NotNull, Suite
    >>> project = Project.init(tempfile.mkdtemp(), name="demo")
    >>> result = Suite("users", [NotNull("id")]).run({"id": [1, None]})
    >>> event_id = record(project, result)
    >>> [(r.suite, r.passed, r.results[0].unexpected_count) for r in history(project, "users")]
    [('users', False, 1)]
    >>> project.close()
    """
    result.event_id = project.events.emit(EVENT_KIND, result.suite, result.to_dict(), cause=cause)
    return result.event_id


def history(
    project: Project, suite: str | None = None, limit: int = 20, since: float | None = None
) -> list[SuiteResult]:
    """Past results, newest first, of one suite or of all of them."""
    events = project.events.list(kind=EVENT_KIND, subject=suite, since=since, limit=limit)
    return [SuiteResult.from_dict(event.payload, event_id=event.id) for event in events]


def suites(project: Project) -> list[str]:
    """The names of the suites with recorded results, sorted."""
    from sqlalchemy import select

    table = project.events.table
    query = select(table.c.subject).where(table.c.kind == EVENT_KIND).distinct()
    with project.events.db.read() as connection:
        return sorted(row[0] for row in connection.execute(query))
