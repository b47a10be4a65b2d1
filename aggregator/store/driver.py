"""Hot statements, compiled once per dialect and run through the driver.

Ingest runs a few statements thousands of times per fetch cycle: the candidate query once per
record, and inserts of a few dozen index rows per record. ``Connection.execute`` pays, on every
call, a compiled-cache lookup and parameter bookkeeping and, for every row of an executemany,
a pass of every value through generic per-parameter machinery; for these statements that was
more than the database's own work (benchmarks/cycle_bench.py, stage "store"). Here the SQL text
is compiled once per (statement, dialect) and each value goes through its column type's own
bind processor, the one ``execute`` would call, so what is stored is the same to the byte.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """A statement's SQL text for one dialect and how to turn named values into its
    parameters (``order`` for a positional paramstyle, names for a named one)."""

    sql: str
    order: tuple[str, ...] | None
    names: tuple[str, ...]
    processors: Mapping[str, Processor]
    # The statement's own literal values (SQLite renders LIMIT with an OFFSET 0 of its own).
    fixed: Mapping[str, Any]

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The driver's parameters for one execution: ``values`` (by bind name) processed,
        each name once however often the SQL repeats it."""
        procs, fixed = self.processors, self.fixed
        done: dict[str, Any] = {}
        for name in self.names:
            value = values[name] if name in values else fixed[name]
            proc = procs.get(name)
            done[name] = proc(value) if proc is not None else value
        if self.order is not None:
            return tuple(done[n] for n in self.order)
        return done

    def rows(self, rows: Iterable[Mapping[str, Any]]) -> list[Any]:
        """The driver's parameters for an executemany of ``rows``."""
        plan = [(n, self.processors.get(n)) for n in self.order or self.names]
        if self.order is not None:
            return [tuple(p(r[n]) if p else r[n] for n, p in plan) for r in rows]
        return [{n: p(r[n]) if p else r[n] for n, p in plan} for r in rows]


_compiled: dict[tuple[Any, ...], tuple[sa.ClauseElement, DriverStatement]] = {}
_lock = threading.Lock()


def driver_statement(
    stmt: sa.ClauseElement, dialect: Dialect, column_keys: Sequence[str] | None = None
) -> DriverStatement:
    """``stmt`` compiled for ``dialect`` (for an insert: of the columns ``column_keys``).

    Cached per statement object: pass module-level or cached statements, not new ones per call.
    """
    keys = tuple(column_keys) if column_keys is not None else None
    key = (id(stmt), dialect.name, dialect.driver, keys)
    hit = _compiled.get(key)
    if hit is not None and hit[0] is stmt:
        return hit[1]
    compiled = cast(
        SQLCompiler,
        stmt.compile(dialect=dialect, column_keys=list(keys) if keys is not None else None),
    )
    order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
    names = order if order is not None else tuple(compiled.bind_names.values())
    processors: dict[str, Processor] = {}
    fixed: dict[str, Any] = {}
    for name, bind in compiled.binds.items():
        if name not in names:
            continue
        proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if proc is not None:
            processors[name] = proc
        if not bind.required and bind.value is not None:
            fixed[name] = bind.value
    prepared = DriverStatement(
        sql=compiled.string,
        order=order,
        names=tuple(dict.fromkeys(names)),
        processors=processors,
        fixed=fixed,
    )
    with _lock:  # the statement is kept alive with its entry, so its id is not reused
        _compiled[key] = (stmt, prepared)
    return prepared


def insert_many(conn: sa.Connection, stmt: sa.Insert, rows: Sequence[Mapping[str, Any]]) -> None:
    """An executemany of the insert ``stmt`` over ``rows`` (every row has the same keys)."""
    if not rows:
        return
    prepared = driver_statement(stmt, conn.dialect, column_keys=list(rows[0]))
    conn.exec_driver_sql(prepared.sql, prepared.rows(rows))


def execute(
    conn: sa.Connection, stmt: sa.ClauseElement, values: Mapping[str, Any] | None = None
) -> sa.CursorResult[Any]:
    """One execution of ``stmt`` (a module-level statement) with ``values`` by bind name.

    The result's values are the driver's own, not passed through the columns' result
    processors: for statements whose results need none (integers, text) or that return none.
    """
    prepared = driver_statement(stmt, conn.dialect)
    return conn.exec_driver_sql(prepared.sql, prepared.params(values or {}))


def execute_many(
    conn: sa.Connection, stmt: sa.ClauseElement, rows: Sequence[Mapping[str, Any]]
) -> None:
    """An executemany of ``stmt`` (a module-level UPDATE or DELETE) over ``rows``."""
    if not rows:
        return
    prepared = driver_statement(stmt, conn.dialect)
    conn.exec_driver_sql(prepared.sql, prepared.rows(rows))
