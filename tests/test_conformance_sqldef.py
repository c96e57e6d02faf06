"""sqldef's SQLite migration cases, run through our engine (read from ../shared; skipped when absent).

Each case: apply ``current``, migrate to ``desired``, then the live schema must equal
``desired`` introspected on its own and the next plan must be empty. A second run
first inserts a few rows into ``current`` and checks that every surviving cell is
kept (or that a migration that would lose them is refused with the file unchanged).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pydsqlite import PydsqliteError, Schema, schema_from_sql, schema_migration_plan, sync_schema
from pydsqlite.ddl_parser import normalize_expression
from pydsqlite.introspect import introspect
from pydsqlite.schema import fold_name

yaml = pytest.importorskip("yaml")

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


def sample_rows(conn: sqlite3.Connection) -> None:
    """Up to three rows per table, with values that suit each column's affinity; rows a constraint refuses are skipped."""
    for table in introspect(conn).tables:
        columns = [c for c in table.columns if c.generated is None]
        for number in (1, 2, 3):
            values = [_value(c.affinity, number) for c in columns]
            names = ", ".join('"' + c.name.replace('"', '""') + '"' for c in columns)
            try:
                conn.execute(
                    f'INSERT INTO "{table.name}" ({names}) VALUES ({", ".join("?" * len(columns))})', values
                )
            except sqlite3.Error:
                pass
    conn.commit()


def _value(affinity: str, number: int) -> object:
    return {"INTEGER": number, "REAL": number + 0.5, "NUMERIC": number, "TEXT": f"t{number}", "BLOB": bytes([number])}[affinity]


def cells(conn: sqlite3.Connection) -> dict[tuple[str, str], list]:
    """Every cell keyed by (table, column), rows in rowid/primary-key order."""
    result = {}
    for table in introspect(conn).tables:
        order = ", ".join('"' + c + '"' for c in table.primary_key) or "rowid"
        for column in table.columns:
            values = [row[0] for row in conn.execute(f'SELECT "{column.name}" FROM "{table.name}" ORDER BY {order}')]
            result[(fold_name(table.name), fold_name(column.name))] = values
    return result


def same_value(before: object, after: object) -> bool:
    if before == after:
        return True
    try:
        return float(before) == float(after)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(before) == str(after)


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
        file_before = path.read_bytes()
        try:
            sync_schema(conn, desired, allow_destructive=True)
        except PydsqliteError:
            if not with_rows:
                raise
            assert path.read_bytes() == file_before  # refused: nothing changed, every cell kept
        else:
            assert canonical(introspect(conn)) == canonical(desired)
            assert schema_migration_plan(conn, desired).is_empty
            after = cells(conn)
            renamed = {
                (fold_name(old_table), fold_name(old_column)): (fold_name(t.name), fold_name(c.name))
                for t in desired.tables for old_table in (t.name, *t.renamed_from)
                for c in t.columns for old_column in (c.name, *c.renamed_from)
            }
            for key, values in before.items():
                target = renamed.get(key, key) if renamed.get(key, key) in after else key
                if target in after and len(after[target]) == len(values):
                    assert all(same_value(b, a) for b, a in zip(values, after[target], strict=True)), (key, values, after[target])
        conn.close()
    except BaseException:
        TALLY["failed"] += 1
        raise
    TALLY["passed"] += 1


def test_zz_report_tally(capsys):
    """Prints the tally of the cases above (run last in this module)."""
    with capsys.disabled():
        print(f"\nsqldef conformance: {TALLY['passed']} passed, {TALLY['not applicable']} not applicable, {TALLY['failed']} failed")
