"""Foreign keys across replicas: after a merge, a replica that enforces foreign keys settles every
violation the merge left, as local writes that travel on to the other replicas.

A replica with foreign keys off stores what it receives as it is; one that enforces them
merges with the keys deferred and then, for each row whose parent is missing (the rule
of docs/sync.md, "Foreign keys"):

- ``CASCADE``: the row is deleted (a tombstone);
- ``SET NULL`` / ``SET DEFAULT``: its key columns are set, stamped now;
- ``NO ACTION`` / ``RESTRICT``: the parent is revived from its tombstone with its last
  values and its row version stamped now — a concurrent reference beats a delete, and its
  LWW registers keep their times, so edits still arriving merge as they would have.

A revived row is kept for the rest of the settling: if it is itself a child whose parent
is missing, that parent is revived too (rather than the row cascading away). A parent
with nothing to revive (never seen here) makes the child go: ``SET NULL`` / ``SET DEFAULT``
as usual, otherwise the child is deleted, and it is not revived later. Violations
involving a table that does not sync are refused with ``SyncError``. Every step is
decided from the database's state alone, so replicas that settle the same merge
concurrently make the same decisions, and their stamped results join.

Settlements are stamped just after the state they change (``hlc.successor``), so a later
write (a move of the child to a live parent) beats them in any delivery order; a row such a
write brings back brings back the rows its settled deletion cascaded to.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..engines import Engine
from ..errors import SyncError
from ..migrate.checks import no_parent_condition
from ..rows.codec import RowCodec
from ..schema.objects import Schema, Table, fold_name
from ..sql.render import quote_identifier

if TYPE_CHECKING:
    from .changeset import RowChange
    from .replication import Replica, Settled

_MAX_ROUNDS = 1000
"""Each row changes state a bounded number of times while settling; this only guards against a bug."""


@dataclass(frozen=True)
class Link:
    """One foreign key: ``columns`` of ``child`` reference ``parent_columns`` of ``parent``."""

    child: Table
    columns: tuple[str, ...]
    parent: Table
    parent_columns: tuple[str, ...]
    on_delete: str
    position: int
    """The key's position among the child's foreign keys (a stable order)."""


class ReferenceGraph:
    """Every foreign key of the live schema, by child table and by parent table (names case-folded)."""

    def __init__(self, schema: Schema) -> None:
        self.tables = {fold_name(table.name): table for table in schema.tables}
        self.outgoing: dict[str, list[Link]] = {}
        self.incoming: dict[str, list[Link]] = {}
        for table in schema.tables:
            for position, key in enumerate(table.foreign_keys):
                parent = schema.table(key.ref_table)
                if parent is None or len(key.ref_columns) != len(key.columns):
                    continue  # SQLite itself refuses writes under such a key ("foreign key mismatch")
                link = Link(table, key.columns, parent, key.ref_columns, key.on_delete, position)
                self.outgoing.setdefault(fold_name(table.name), []).append(link)
                self.incoming.setdefault(fold_name(parent.name), []).append(link)


Violation = tuple[Link, tuple[Any, ...], tuple[Any, ...]]
"""(foreign key, the child row's key, the parent values it references)."""


@dataclass(frozen=True)
class Revival:
    """A dead parent the settling brought back, and the row whose reference kept it."""

    state: RowChange
    child_table: str
    child_key: tuple[Any, ...]


class ReferenceRepair:
    """The settling of one merge: the rows it wrote and deleted are checked, violations resolved, repeated."""

    def __init__(self, replica: Replica, graph: ReferenceGraph, codecs: dict[str, RowCodec]) -> None:
        self.replica = replica
        self.engine = replica.engine
        self.graph = graph
        self.codecs = codecs
        """Synced tables by case-folded name; rows of other tables are never written here."""
        self.written: dict[str, dict[tuple[Any, ...], None]] = {}
        self.deleted: dict[str, list[dict[str, Any]]] = {}
        self.kept: set[tuple[str, tuple[Any, ...]]] = set()
        self.doomed: set[tuple[str, tuple[Any, ...]]] = set()
        self.cleared: set[tuple[str, tuple[Any, ...], int]] = set()
        self.revivals: list[Revival] = []
        """The parents brought back, in order (named when a revival is refused by a unique index)."""

    # --- what the merge did ------------------------------------------------------------------

    def note_written(self, table: str, keys: Iterable[tuple[Any, ...]]) -> None:
        """Rows written alive: their parents must exist."""
        name = fold_name(table)
        if name in self.graph.outgoing:
            self.written.setdefault(name, {}).update(dict.fromkeys(keys))

    def note_deleted(self, table: str, states: Iterable[RowChange]) -> None:
        """Rows deleted: no row may still reference them."""
        name = fold_name(table)
        if name in self.graph.incoming:
            key_names = self.graph.tables[name].primary_key
            self.deleted.setdefault(name, []).extend(
                {fold_name(column): value for column, value in state.stored_values(key_names).items()} for state in states
            )

    def note_settled(self, settled: Settled) -> None:
        """What the capture triggers saw meanwhile: cascaded deletes and foreign-key actions."""
        for state in settled.deleted:
            self.note_deleted(state.table, [state])
        for table, key in settled.written:
            self.note_written(table, [key])

    def bring_back_followers(self, revived: list[tuple[str, list[RowChange]]]) -> None:
        """Rows a settlement deleted here come back with the row whose deletion took them (ON DELETE
        CASCADE) when the merge brings that row back (``revived``: by table): a later write, such as
        a move of a child to a live parent, undid the settlement but wrote nothing of theirs. Their
        tombstones are settlements too (``hlc.SETTLED_NODE``); a row deleted otherwise stays deleted."""
        wave: dict[str, list[RowChange]] = {}
        for table, states in revived:
            wave.setdefault(fold_name(table), []).extend(states)
        while wave:
            following: dict[str, list[RowChange]] = {}
            for table, parents in wave.items():
                # read lazily: a row restored through one link is no longer dead when the next is read
                for codec, followers in self._settled_followers(table, parents):
                    self.replica.restore_rows(codec, followers, after_tombstone=True)
                    self.note_written(codec.name, [state.key for state in followers])
                    following.setdefault(fold_name(codec.name), []).extend(followers)
            wave = following

    def _settled_followers(self, table: str, parents: list[RowChange]) -> Iterator[tuple[RowCodec, list[RowChange]]]:
        """For each ``CASCADE`` link into ``table``: the child rows whose settlement tombstone still
        references one of ``parents`` (the child table's settled rows read once for all of them)."""
        parent_codec = self.codecs.get(table)
        if parent_codec is None:
            return
        held = [_folded(parent.stored_values(parent_codec.key)) for parent in parents]
        for link in self.graph.incoming.get(table, []):
            codec = self.codecs.get(fold_name(link.child.name))
            if link.on_delete != "CASCADE" or codec is None:
                continue
            wanted = {tuple(values.get(fold_name(name)) for name in link.parent_columns) for values in held}
            followers = [
                state
                for state in self.replica.dead_states(codec, settled_only=True)
                if tuple(_folded(state.stored_values(codec.key)).get(fold_name(name)) for name in link.columns) in wanted
            ]
            if followers:
                yield codec, followers

    # --- settling ----------------------------------------------------------------------------

    def run(self) -> None:
        """Settle rounds until no violation is left; in each, revivals go first (a parent brought back
        settles its other children's violations too), then the stable order of ``_find``."""
        for _ in range(_MAX_ROUNDS):
            violations = self._find()
            if not violations:
                return
            for violation in sorted(violations, key=lambda violation: not self._revives(violation[0], violation[1])):
                self._settle(*violation)
        raise SyncError(f"foreign keys did not settle after {_MAX_ROUNDS} rounds; nothing was applied")

    def _revives(self, link: Link, key: tuple[Any, ...]) -> bool:
        """Whether settling this violation tries to bring the parent back (rather than change the child)."""
        row = (fold_name(link.child.name), key)
        if link.on_delete in ("SET NULL", "SET DEFAULT"):
            return (*row, link.position) in self.cleared
        return link.on_delete != "CASCADE" or row in self.kept

    def _find(self) -> list[Violation]:
        """Rows written whose parent is missing, and rows referencing a deleted row, in a stable order."""
        written, self.written = self.written, {}
        deleted, self.deleted = self.deleted, {}
        found: dict[tuple[str, int, str], Violation] = {}
        for table, keys in written.items():
            for link in self.graph.outgoing[table]:
                key_names = _key_columns(link.child)
                for violation in _violations(self.engine, link, key_names, list(keys)):
                    found[(fold_name(link.child.name), link.position, repr(violation[1]))] = violation
        for table, rows in deleted.items():
            for link in self.graph.incoming[table]:
                referenced = {tuple(row.get(fold_name(name)) for name in link.parent_columns) for row in rows}
                complete = [values for values in referenced if None not in values]
                for violation in _violations(self.engine, link, link.columns, complete):
                    found[(fold_name(link.child.name), link.position, repr(violation[1]))] = violation
        return [found[position] for position in sorted(found)]

    def _settle(self, link: Link, key: tuple[Any, ...], values: tuple[Any, ...]) -> None:
        if not _still_violated(self.engine, link, key, values):
            return  # settled meanwhile (a parent revived, the row deleted or changed)
        child = self.codecs.get(fold_name(link.child.name))
        parent = self.codecs.get(fold_name(link.parent.name))
        if child is None or parent is None:
            other = link.child.name if child is None else link.parent.name
            raise SyncError(
                f"row {key!r} of table {link.child.name!r} references {link.parent.name}({', '.join(link.parent_columns)}) "
                f"= {values!r}, which does not exist here; table {other!r} is not synced here (no table model with LWW "
                "columns describes it), so this replica cannot settle the foreign key; nothing was applied",
                table=link.child.name, key=key,
            )
        if not self._revives(link, key):
            if link.on_delete == "CASCADE":
                self._delete(child, key)
            else:
                self.cleared.add((fold_name(child.name), key, link.position))
                self._clear(child, link, key)
        elif not self._revive(parent, link, values, key):
            self.doomed.add((fold_name(child.name), key))
            self._delete(child, key)

    def _clear(self, codec: RowCodec, link: Link, key: tuple[Any, ...]) -> None:
        """SET NULL / SET DEFAULT: the key columns take NULL or their declared default, stamped now."""
        assignments = {}
        for name in link.columns:
            column = link.child.column(name)
            default = column.default if column is not None and link.on_delete == "SET DEFAULT" else None
            assignments[name] = f"({default})" if default is not None else "NULL"
        self.replica.set_columns(codec, key, assignments)
        self.note_written(codec.name, [key])  # a default may reference a missing parent too

    def _delete(self, codec: RowCodec, key: tuple[Any, ...]) -> None:
        settled = self.replica.delete_row(codec, key)
        if settled is not None:
            self.note_settled(settled)

    def _revive(self, codec: RowCodec, link: Link, values: tuple[Any, ...], child_key: tuple[Any, ...]) -> bool:
        """Bring back the dead parent ``link`` references with ``values`` (for the row ``child_key``);
        False when there is none to revive."""
        wanted = dict(zip((fold_name(name) for name in link.parent_columns), values, strict=True))
        key_names = [fold_name(name) for name in codec.key]
        if set(wanted) == set(key_names):
            candidates = self.replica.dead_states(codec, tuple(wanted[name] for name in key_names))
        else:
            candidates = self.replica.dead_states(codec)
        state = next(
            (
                candidate
                for candidate in candidates
                if all(_folded(candidate.stored_values(codec.key)).get(name) == value for name, value in wanted.items())
            ),
            None,
        )
        if state is None or (fold_name(codec.name), state.key) in self.doomed:
            return False
        self.revivals.append(Revival(state, link.child.name, child_key))
        self.replica.restore_rows(codec, [state])
        self.kept.add((fold_name(codec.name), state.key))
        self.note_written(codec.name, [state.key])
        return True


def _folded(values: dict[str, Any]) -> dict[str, Any]:
    return {fold_name(name): value for name, value in values.items()}


def _key_columns(table: Table) -> tuple[str, ...]:
    """The columns that identify a row of ``table`` (its rowid when it has no primary key)."""
    return table.primary_key or ("rowid",)


def _column(alias: str, name: str) -> str:
    return f"{alias}.rowid" if name == "rowid" else f"{alias}.{quote_identifier(name)}"


def _missing_parent(link: Link) -> str:
    """SQL true when the child row ``c`` references a parent row that does not exist."""
    return no_parent_condition([f"c.{quote_identifier(name)}" for name in link.columns], link.parent.name, link.parent_columns)


def _violations(engine: Engine, link: Link, by: Iterable[str], wanted: list[tuple[Any, ...]]) -> list[Violation]:
    """Rows of ``link.child`` whose ``by`` columns hold one of ``wanted`` and whose parent is missing."""
    by = list(by)
    key_names = _key_columns(link.child)
    selected = ", ".join(_column("c", name) for name in (*key_names, *link.columns))
    head = (
        f"SELECT {selected} FROM {quote_identifier(link.child.name)} AS c WHERE {_missing_parent(link)} "
        f"AND ({', '.join(_column('c', name) for name in by)}) IN "
    )
    return [(link, tuple(row[: len(key_names)]), tuple(row[len(key_names) :])) for row in select_in(engine, head, len(by), wanted)]


def select_in(engine: Engine, head: str, width: int, wanted: list[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """Rows of the query ``head`` (ending in ``… IN``) for tuples of ``width`` values, in chunks
    of ``IN (VALUES …)`` that stay under the engine's limit on bound parameters."""
    for sql, params in _in_chunks(engine, head, width, wanted):
        yield from engine.execute(sql, params)


def execute_in(engine: Engine, head: str, width: int, wanted: list[tuple[Any, ...]]) -> None:
    """Run the write ``head`` (ending in ``… IN``) for tuples of ``width`` values, as ``select_in`` does."""
    for sql, params in _in_chunks(engine, head, width, wanted):
        engine.execute(sql, params)


def _in_chunks(engine: Engine, head: str, width: int, wanted: list[tuple[Any, ...]]) -> Iterator[tuple[str, list[Any]]]:
    chunk = max(1, min(900, engine.parameters_per_statement()) // width)
    for start in range(0, len(wanted), chunk):
        part = wanted[start : start + chunk]
        values = ", ".join("(" + ", ".join("?" * width) + ")" for _ in part)
        yield f"{head} (VALUES {values})", [value for row in part for value in row]


def _still_violated(engine: Engine, link: Link, key: tuple[Any, ...], values: tuple[Any, ...]) -> bool:
    key_names = _key_columns(link.child)
    where = " AND ".join(f"{_column('c', name)} = ?" for name in (*key_names, *link.columns))
    query = f"SELECT 1 FROM {quote_identifier(link.child.name)} AS c WHERE {where} AND {_missing_parent(link)}"
    return engine.execute(query, (*key, *values)).fetchone() is not None
