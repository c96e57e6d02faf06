"""What interrupted online migrations leave behind, found by name, and settled by an offline migration."""

from __future__ import annotations

import json

from ...engines import Engine
from ...errors import MigrationError
from ...schema.objects import fold_name
from ...sql.render import quote_identifier
from ..introspect import has_object
from ..metadata import ONLINE_PREFIX
from ..shadow import STATE_TABLE
from .claim import CLAIM_TABLE, Claim


def leftovers(engine: Engine) -> dict[str, list[tuple[str, str, str]]]:
    """(type, name, table) of the objects online rebuilds left: ``new`` and ``old`` tables, key
    ``log`` tables, ``trigger`` (the recorders) and ``index`` (temporarily named indexes)."""
    rows = engine.execute(
        "SELECT type, name, tbl_name FROM main.sqlite_master WHERE name LIKE ? ESCAPE '\\' ORDER BY rowid",
        (ONLINE_PREFIX.replace("_", "\\_") + "\\_%",),
    ).fetchall()
    found: dict[str, list[tuple[str, str, str]]] = {"new": [], "old": [], "log": [], "trigger": [], "index": []}
    for kind, name, table in rows:
        if kind in ("trigger", "index"):
            found[kind].append((kind, name, table))
            continue
        for label in ("new", "old", "log"):
            if kind == "table" and fold_name(name).startswith(fold_name(f"{ONLINE_PREFIX}_{label}_")):
                found[label].append((kind, name, table))
    return found


def schema_outside_online(engine: Engine) -> list[tuple[str, str, str, str | None]]:
    """The main database's schema without what online rebuilds make (their tables, the indexes
    on those tables, the recorder triggers): what another connection may change while a copy runs,
    compared at the swap with what the copy was planned on."""
    pattern = ONLINE_PREFIX.replace("_", "\\_") + "%"  # the state table is named by the prefix alone
    return engine.execute(
        "SELECT type, name, tbl_name, sql FROM main.sqlite_master "
        "WHERE name NOT LIKE ? ESCAPE '\\' AND tbl_name NOT LIKE ? ESCAPE '\\' ORDER BY type, name",
        (pattern, pattern),
    ).fetchall()


def pending_online_work(engine: Engine) -> tuple[str, ...]:
    """What an interrupted online migration left to finish, which the next sync does before it plans:
    old tables to free, second copies that give indexes their names back (read only)."""
    work = [f"free the old copy of table {name[len(f'{ONLINE_PREFIX}_old_') :]}" for _, name, _ in leftovers(engine)["old"]]
    if has_object(engine, STATE_TABLE):
        pending = engine.execute(f"SELECT table_name FROM {STATE_TABLE} WHERE pass = 2 ORDER BY table_name").fetchall()
        work += [f"copy table {table} once more, to give its indexes their names back" for (table,) in pending]
    return tuple(work)


def settle_offline(engine: Engine) -> None:
    """Inside an offline migration's transaction (which holds the lock anyway): drop everything
    interrupted online migrations left, and give pending indexes their names back."""
    claim = Claim()
    holder = claim.holder(engine)
    if holder is not None:
        raise MigrationError(
            f"another process (pid {holder[2]} on {holder[1]}) started an online migration of this database; "
            "nothing was changed: try again when it is done"
        )
    found = leftovers(engine)
    for _, name, _ in found["trigger"]:
        engine.execute(f"DROP TRIGGER {quote_identifier(name)}")
    for label in ("log", "new", "old"):
        for _, name, _ in found[label]:
            engine.execute(f"DROP TABLE {quote_identifier(name)}")
    if has_object(engine, STATE_TABLE):
        for table, final_indexes in engine.execute(f"SELECT table_name, final_indexes FROM {STATE_TABLE} WHERE pass = 2").fetchall():
            for _, name, owner in found["index"]:
                if fold_name(owner) == fold_name(table):
                    engine.execute(f"DROP INDEX {quote_identifier(name)}")
            for statement in json.loads(final_indexes):
                engine.execute(statement)
        engine.execute(f"DROP TABLE {STATE_TABLE}")
    engine.execute(f"DROP TABLE IF EXISTS {CLAIM_TABLE}")
