"""sqldef's SQLite migration cases, run through our engine (read from ../shared; skipped when absent).

Each case: apply ``current``, migrate to ``desired``, then the live schema must equal
``desired`` introspected on its own and the next plan must be empty. A second run
first inserts three rows into every table of ``current``: the migration must then keep
every table's row count and every cell of every kept column (new columns hold their
default). Only the cases listed in ``LOSES_DATA`` may be refused without
``allow_destructive``, with an error naming the table or column whose rows would go
and the file unchanged; every other refusal fails the case.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from pydsqlite import DestructiveChangeError, Schema, schema_from_sql, schema_migration_plan, sync_schema
from pydsqlite.engines import SqliteEngine
from pydsqlite.migrate.introspect import introspect
from pydsqlite.schema.objects import fold_name
from pydsqlite.sql.ddl import normalize_expression
from pydsqlite.sql.render import quote_identifier

from .helpers import require

yaml = require("yaml")

SUITE = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "sqldef-sqlite3"
if not SUITE.is_dir():
    pytest.skip(f"sqldef conformance cases not found at {SUITE}", allow_module_level=True)

NOT_APPLICABLE = {
    "DropTableSkipped": "enable_drop: false is sqldef's switch to leave drops undone; we drop managed objects (destructive steps are explicit)",
    "DropViewSkipped": "enable_drop: false semantics (sqldef-only)",
    "DropTriggerSkipped": "enable_drop: false semantics (sqldef-only)",
    "DropColumnSkipped": "enable_drop: false semantics (sqldef-only)",
    "DropIndexSkipped": "enable_drop: false semantics (sqldef-only)",
}


def load_cases() -> list[tuple[str, dict]]:
    cases = []
    for path in sorted(SUITE.glob("*.yml")):
        for name, case in (yaml.safe_load(path.read_text()) or {}).items():
            cases.append((f"{path.stem}::{name}", case))
    return cases


CASES = load_cases()
TALLY = {"passed": 0, "not applicable": 0, "failed": 0}


def canonical(schema: Schema) -> dict:
    """Schema facts compared by the test, independent of column order and SQL spelling."""
    tables = {}
    for table in schema.tables:
        tables[fold_name(table.name)] = {
            "columns": sorted(
                (fold_name(c.name), c.type, c.not_null, normalize_expression(c.default) if c.default else None,
                 (c.collate or "BINARY").upper(), normalize_expression(c.generated) if c.generated else None,
                 tuple(sorted((normalize_expression(x.sql), x.name or "") for x in c.checks)), c.on_conflict)
                for c in table.columns
            ),
            "primary_key": tuple(fold_name(c) for c in table.primary_key),
            "foreign_keys": sorted(
                (tuple(map(fold_name, k.columns)), fold_name(k.ref_table), tuple(map(fold_name, k.ref_columns)), k.on_delete, k.on_update, k.deferred)
                for k in table.foreign_keys
            ),
            "uniques": sorted((tuple(map(fold_name, u.columns)), u.collations, u.on_conflict) for u in table.uniques),
            "checks": sorted((normalize_expression(c.sql), c.name or "") for c in table.checks),
            "primary_key_conflict": table.primary_key_conflict,
            "options": (table.strict, table.without_rowid, table.autoincrement),
            "indexes": sorted(
                (fold_name(i.name), tuple(fold_name(c) for c in i.columns), i.unique, normalize_expression(i.where) if i.where else None)
                for i in table.indexes
            ),
        }
    return {
        "tables": tables,
        "views": sorted((fold_name(v.name), normalize_expression(v.sql)) for v in schema.views),
        "triggers": sorted((fold_name(t.name), normalize_expression(t.sql)) for t in schema.triggers),
    }


# With rows, migrating without allow_destructive must be refused exactly for the cases that
# drop data, naming what is lost: case → (table, dropped column or None for the whole table).
LOSES_DATA = {
    "tests::DropTable": ("bigdata", None),
    "tests::RenameTableAndMultipleColumnChanges": ("accounts", "old_field"),
    "tests_preserve_quotes::DropColumnCaseMismatch": ("USERS", "old_col"),
}
SAMPLE_ROWS = 3


def sample_rows(conn: sqlite3.Connection) -> None:
    """Up to three rows per table, with values that suit each column's affinity; rows a constraint refuses are skipped."""
    for table in introspect(SqliteEngine(conn)).tables:
        columns = [c for c in table.columns if c.generated is None]
        for number in range(1, SAMPLE_ROWS + 1):
            values = [_value(c.affinity, number) for c in columns]
            names = ", ".join(quote_identifier(c.name) for c in columns)
            try:
                conn.execute(f"INSERT INTO {quote_identifier(table.name)} ({names}) VALUES ({', '.join('?' * len(columns))})", values)
            except sqlite3.Error:
                pass
    conn.commit()


def _value(affinity: str, number: int) -> object:
    return {"INTEGER": number, "REAL": number + 0.5, "NUMERIC": number, "TEXT": f"t{number}", "BLOB": bytes([number])}[affinity]


def cells(conn: sqlite3.Connection) -> dict[str, dict[str, list]]:
    """Every cell: table → column → values, rows in rowid/primary-key order."""
    result = {}
    for table in introspect(SqliteEngine(conn)).tables:
        order = ", ".join(quote_identifier(c) for c in table.primary_key) or "rowid"
        names = [c.name for c in table.columns]
        selected = conn.execute(
            f"SELECT {', '.join(map(quote_identifier, names))} FROM {quote_identifier(table.name)} ORDER BY {order}"
        ).fetchall()
        result[fold_name(table.name)] = {fold_name(name): [row[i] for row in selected] for i, name in enumerate(names)}
    return result


def same_value(before: object, after: object) -> bool:
    if before == after:
        return True
    try:
        return float(before) == float(after)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(before) == str(after)


def assert_rows_kept(conn: sqlite3.Connection, before: dict[str, dict[str, list]], desired: Schema) -> None:
    """Every table keeps its row count and every cell of every column it keeps (under its new
    name after a rename); new columns hold their default; new tables are empty."""
    after = cells(conn)
    for table in desired.tables:
        new_columns = after[fold_name(table.name)]
        old_name = next((fold_name(n) for n in (table.name, *table.renamed_from) if fold_name(n) in before), None)
        old_columns = before.get(old_name, {}) if old_name is not None else {}
        old_count = len(next(iter(old_columns.values()), []))
        new_count = len(next(iter(new_columns.values()), []))
        assert new_count == old_count, f"{table.name}: {old_count} rows before, {new_count} after"
        for column in table.columns:
            values = new_columns[fold_name(column.name)]
            source = next((fold_name(n) for n in (column.name, *column.renamed_from) if fold_name(n) in old_columns), None)
            if source is not None:
                assert all(same_value(b, a) for b, a in zip(old_columns[source], values, strict=True)), (
                    table.name, column.name, old_columns[source], values,
                )
            elif column.generated is None:
                default = conn.execute(f"SELECT {column.default}").fetchone()[0] if column.default is not None else None
                if column.default is not None and "current_" in column.default.lower():
                    assert None not in values, (table.name, column.name, values)
                else:
                    assert all(value == default for value in values), (table.name, column.name, default, values)


@pytest.mark.parametrize(("name", "case"), CASES, ids=[name for name, _ in CASES])
@pytest.mark.parametrize("with_rows", [False, True], ids=["empty", "with-rows"])
def test_sqldef_case(name, case, with_rows, tmp_path):
    short = name.split("::", 1)[1]
    if short in NOT_APPLICABLE:
        TALLY["not applicable"] += 1
        pytest.skip(NOT_APPLICABLE[short])
    try:
        path = tmp_path / "case.db"
        conn = sqlite3.connect(path)
        conn.executescript(case.get("current") or "")
        if with_rows:
            sample_rows(conn)
        before = cells(conn)
        desired = schema_from_sql(case.get("desired") or "")
        if with_rows and name in LOSES_DATA:
            table, column = LOSES_DATA[name]
            lost = f"{re.escape(table)}\\.{re.escape(column)}: {SAMPLE_ROWS} rows: values" if column else f"{re.escape(table)}: {SAMPLE_ROWS} rows: rows"
            file_before = path.read_bytes()
            with pytest.raises(DestructiveChangeError, match=lost + " would be deleted"):
                sync_schema(conn, desired)
            assert path.read_bytes() == file_before
        sync_schema(conn, desired, allow_destructive=name in LOSES_DATA)  # any other refusal fails the case
        assert canonical(introspect(SqliteEngine(conn))) == canonical(desired)
        assert schema_migration_plan(conn, desired).is_empty
        assert_rows_kept(conn, before, desired)
        conn.close()
    except BaseException:
        TALLY["failed"] += 1
        raise
    TALLY["passed"] += 1


def test_zz_report_tally(capsys):
    """Prints the tally of the cases above (run last in this module)."""
    with capsys.disabled():
        print(f"\nsqldef conformance: {TALLY['passed']} passed, {TALLY['not applicable']} not applicable, {TALLY['failed']} failed")
