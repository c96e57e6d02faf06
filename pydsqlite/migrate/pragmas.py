"""What SQLite's PRAGMAs say about many tables, read in a few statements (part of stage 2).

One statement per kind of fact (columns, index keys, foreign keys) for a chunk of tables: the
table-valued PRAGMA functions joined with the wanted names, so SQLite walks every table and index
itself instead of answering one statement per table and per index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engines import Engine

NAMES_PER_STATEMENT = 400
"""Table names bound by one statement: under every SQLite's limit on bound parameters (999 before 3.32),
unless the engine or the connection allows fewer (dqlite: 255)."""

ColumnRow = tuple[str, str, int, Any, int, int]
"""``pragma_table_xinfo``: name, declared type, notnull, dflt_value, pk, hidden."""
IndexKeyRow = tuple[int, str | None, int, str | None]
"""``pragma_index_xinfo`` of one key column: cid, name, desc, coll."""
ForeignKeyRow = tuple[int, int, str, str, Any, str, str]
"""``pragma_foreign_key_list``: id, seq, table, from, to (None for ``REFERENCES parent`` without columns), on_update, on_delete."""


@dataclass
class IndexPragmas:
    """One entry of ``pragma_index_list`` with its key columns in order."""

    name: str
    unique: int
    origin: str
    partial: int
    key_columns: list[IndexKeyRow] = field(default_factory=list)


@dataclass
class TablePragmas:
    """A table's columns in declaration order, its indexes as ``pragma_index_list`` lists them (the
    latest first) and its foreign-key rows by id and position."""

    columns: list[ColumnRow] = field(default_factory=list)
    indexes: list[IndexPragmas] = field(default_factory=list)
    foreign_keys: list[ForeignKeyRow] = field(default_factory=list)


_COLUMNS = (
    'SELECT w.name, p.name, p.type, p."notnull", p.dflt_value, p.pk, p.hidden '
    "FROM wanted AS w, pragma_table_xinfo(w.name, 'main') AS p ORDER BY w.name, p.cid"
)
_INDEX_KEYS = (
    'SELECT w.name, l.name, l."unique", l.origin, l.partial, x.cid, x.name, x."desc", x.coll '
    "FROM wanted AS w, pragma_index_list(w.name, 'main') AS l, pragma_index_xinfo(l.name, 'main') AS x WHERE x.key = 1 "
    "ORDER BY w.name, l.seq DESC, x.seqno"
)
_FOREIGN_KEYS = (
    'SELECT w.name, f.id, f.seq, f."table", f."from", f."to", f.on_update, f.on_delete '
    "FROM wanted AS w, pragma_foreign_key_list(w.name, 'main') AS f ORDER BY w.name, f.id, f.seq"
)


def read_pragmas(engine: Engine, names: Sequence[str]) -> dict[str, TablePragmas]:
    """The PRAGMA facts of each table in ``names`` (ordinary tables of the main database, as
    ``sqlite_master`` spells them; a TEMP table of the same name is not read in their place)."""
    per_statement = min(NAMES_PER_STATEMENT, engine.parameters_per_statement())
    read: dict[str, TablePragmas] = {}
    for start in range(0, len(names), per_statement):
        read.update(_read_chunk(engine, names[start : start + per_statement]))
    return read


def _read_chunk(engine: Engine, names: Sequence[str]) -> dict[str, TablePragmas]:
    wanted = "WITH wanted(name) AS (VALUES " + ", ".join(["(?)"] * len(names)) + ") "
    read = {name: TablePragmas() for name in names}
    for row in engine.execute(wanted + _COLUMNS, names).fetchall():
        read[row[0]].columns.append(row[1:])
    for table, index_name, unique, origin, partial, *key_column in engine.execute(wanted + _INDEX_KEYS, names).fetchall():
        indexes = read[table].indexes
        if not indexes or indexes[-1].name != index_name:
            indexes.append(IndexPragmas(index_name, unique, origin, partial))
        indexes[-1].key_columns.append(tuple(key_column))
    for row in engine.execute(wanted + _FOREIGN_KEYS, names).fetchall():
        read[row[0]].foreign_keys.append(row[1:])
    return read
