"""Which views, triggers and virtual tables no longer work: SQLite checks a view or trigger body
only when a statement uses it, so a migration can leave one broken (naming a dropped column)
without any error. Compiling a statement that uses each one (``EXPLAIN`` prepares it without
running it) finds them; a migration compares the broken set before and after its steps.

Two quieter breakages are found the same way. A double-quoted name that no longer names a
column compiles as a string literal (SQLite's "DQS" misfeature): a view, trigger or index
reading ``"status"`` would silently read the text 'status' once the column is gone, so each
double-quoted name such an object compiles as a string constant is reported too (one that
already did before the migration does not count), and so is the reverse: a name read as text
before that a new column would make a column reference. A virtual table reading another table
(an FTS5 external-content table) prepares that read only when it runs, so it is scanned.
Temporary views and triggers of the connection are checked with the main database's.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass

from ..engines import Engine
from ..schema.objects import fold_name
from ..sql.ddl import Token, tokenize
from ..sql.render import double_quotes_as_names, quote_identifier

_EVENTS = ("INSERT", "UPDATE", "DELETE")
_CALLS = itertools.count()


@dataclass(frozen=True)
class Dependants:
    """What the views, triggers and indexes of a database do, read before and after a migration."""

    broken: dict[str, str]
    """``broken_objects``'s entries."""
    text_readings: Counter[str]
    """``object\x00text`` → how often a working view, trigger or index reads that text: as a string
    literal, or as a double-quoted name that names no column (SQLite's renaming of a column rewrites
    the latter as the former); ``object\x01`` counts each such object once; ``object\x02text``
    counts the string literals and double-quoted names its SQL spells, whatever they read."""

    @classmethod
    def read(cls, engine: Engine) -> Dependants:
        text_readings: Counter[str] = Counter()
        return cls(_broken_objects(engine, True, text_readings), text_readings)

    def _existed(self, key: str) -> bool:
        """Whether the object of an entry was there before, spelling the name: a name read as text is a
        change only in an object that read it otherwise (one the migration creates, or writes anew
        with other SQL, reads what its SQL says, as SQLite does)."""
        owner, _, name = key.partition("\x00")
        if not name:
            return True
        return (self.text_readings[f"{owner}\x01"] > 0 or owner in self.broken) and self.text_readings[f"{owner}\x02{name}"] > 0

    def broken_by(self, after: Dependants) -> list[str]:
        """What a migration from this state to ``after`` breaks: objects that stop working, names
        that turn into text, and names read as text that a new column turns into column references."""
        found = [text for key, text in after.broken.items() if key not in self.broken and self._existed(key)]
        for key, text in self.broken.items():
            owner, _, name = key.partition("\x00")
            still_working = after.text_readings[f"{owner}\x01"] > 0
            spelled_still = after.text_readings[f"{owner}\x02{name}"] > 0  # else its SQL was written anew without it
            if name and still_working and spelled_still and after.text_readings[key] < self.text_readings[key]:
                what = text.partition(' would read "')[0]
                found.append(
                    f'{what} reads "{name}" as the text {name!r} (SQLite reads a double-quoted name that is no column as '
                    f"text; spell it '{name}'), but would read the new column {name}"
                )
        return found


def broken_objects(engine: Engine, *, literal_names: bool = True) -> dict[str, str]:
    """Key → "view v: error" / "trigger t on x: error" / "virtual table f: error" for every view,
    trigger and virtual table that does not work, and (``literal_names``) an entry for every
    double-quoted name of a view, trigger or index that names no column of the tables it reads
    (SQLite would read it as text; a name already in that state before a migration does not count)."""
    return _broken_objects(engine, literal_names, Counter())


def _broken_objects(engine: Engine, literal_names: bool, text_readings: Counter[str]) -> dict[str, str]:
    rows = engine.execute(
        "SELECT 'main', type, name, tbl_name, sql FROM main.sqlite_master WHERE type IN ('view', 'trigger', 'table', 'index') "
        "UNION ALL SELECT 'temp', type, name, tbl_name, sql FROM temp.sqlite_master WHERE type IN ('view', 'trigger')"
    ).fetchall()
    broken: dict[str, str] = {}
    triggers: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    reach = _ColumnsInReach(engine, {fold_name(name) for _, kind, name, _, _ in rows if kind in ("table", "view")})
    for schema, kind, name, table, sql in rows:
        key, label = (fold_name(name), name) if schema == "main" else (f"temp.{fold_name(name)}", f"temp.{name}")
        if kind == "view":
            error = _compile_error(engine, f"EXPLAIN SELECT * FROM {quote_identifier(schema)}.{quote_identifier(name)}")
            if error is not None:
                broken[key] = f"view {label}: {error}"
        elif kind == "trigger" and sql:
            triggers[(table, trigger_event(sql))].append((key, name))
        elif kind == "table" and sql and sql.upper().startswith("CREATE VIRTUAL TABLE"):
            error = _compile_error(engine, f"SELECT * FROM {quote_identifier(name)} LIMIT 1")  # prepares what it reads
            if error is not None:
                broken[key] = f"virtual table {name}: {error}"
        if literal_names and kind in ("view", "trigger", "index") and sql and key not in broken:
            what = f"{kind} {label}" if kind == "view" else f"{kind} {label} on {table}"
            broken.update(reach.unresolved(key, what, sql, table, text_readings))
    for (table, event), named in triggers.items():
        statement = _firing_statement(engine, table, event)
        if statement is None or _compile_error(engine, statement) is None:
            continue
        for key, name in named:
            error = _compile_alone(engine, statement, name, [other for _, other in named if other != name])
            if error is not None:
                broken[key] = f"trigger {name} on {table}: {error}"
    return broken


class _ColumnsInReach:
    """Which double-quoted names of an object name no column of the tables and views it reads: SQLite
    reads such a name as a string literal (its "DQS" misfeature), so a migration that removes the
    column silently changes what the object does."""

    def __init__(self, engine: Engine, relations: set[str]) -> None:
        self.engine = engine
        self.relations = relations
        self._columns: dict[str, set[str]] = {}

    def unresolved(self, key: str, what: str, sql: str, owner: str, text_readings: Counter[str]) -> dict[str, str]:
        """Entries for the double-quoted names of object ``key`` that no table or view it names has as a
        column (an index reads its own table; a trigger's body only the tables it names); every text
        the object reads is counted into ``text_readings``. In a view, SQLite itself says which of
        them name something (an alias, a subquery's or CTE's column, a window): those are no text."""
        tokens = tokenize(sql)
        body = None
        if what.startswith("trigger"):  # its WHEN and body read only what they name (the owner's row only as new./old.)
            begin = next((n for n, token in enumerate(tokens) if token.upper == "BEGIN"), 0)
            when = next((n for n, token in enumerate(tokens[:begin]) if token.upper == "WHEN"), begin)
            tokens = tokens[when:]
        elif what.startswith("index"):  # what follows ON: the index's own name is no read
            tokens = [*tokens[next((n for n, token in enumerate(tokens) if token.upper == "ON"), 0) :], Token("word", owner, 0, 0)]
        else:  # a view reads what follows AS: its name and column names are no reads
            start = next((n for n, token in enumerate(tokens) if token.upper == "AS"), 0)
            body = sql[tokens[start].end :] if tokens else ""
            tokens = tokens[start:]
        text_readings[f"{key}\x01"] += 1  # the object works
        text_readings.update(f"{key}\x00{token.identifier}" for token in tokens if token.kind == "string")
        text_readings.update(
            f"{key}\x02{token.identifier}" for token in tokens if token.kind == "string" or (token.kind == "quoted" and token.text.startswith('"'))
        )
        skipped = _defining_positions(tokens)
        quoted = [token.identifier for n, token in enumerate(tokens) if token.kind == "quoted" and token.text.startswith('"') and n not in skipped]
        if not quoted:
            return {}
        upsert = any(token.upper == "DO" and tokens[n + 1].upper == "UPDATE" for n, token in enumerate(tokens[:-1]))
        named = {  # an INSERT's target is not in scope for the values it inserts, but is for an upsert's DO UPDATE
            fold_name(token.identifier)
            for n, token in enumerate(tokens)
            if token.kind in ("word", "quoted") and (upsert or not (n and tokens[n - 1].upper == "INTO"))
        }
        read = named & self.relations
        columns = set().union(*(self._columns_of(relation) for relation in read))
        as_text = [name for name in quoted if fold_name(name) not in columns and fold_name(name) not in self.relations]
        if body is not None:
            as_text = [name for name in as_text if not self._names_something(body, name)]
        text_readings.update(f"{key}\x00{name}" for name in as_text)
        return {
            f"{key}\x00{name}": f'{what} would read "{name}" as the text {name!r}: no table it reads has that column'
            for name in sorted(set(as_text))
        }

    def _names_something(self, body: str, name: str) -> bool:
        """Whether ``name`` in double quotes names something in the SELECT ``body`` (a column, an alias,
        a subquery's or CTE's column): SQLite compiles it with the name in grave accents, which it
        never reads as text."""
        return _compile_error(self.engine, f"EXPLAIN {double_quotes_as_names(body, name)}") is None

    def _columns_of(self, relation: str) -> set[str]:
        if relation not in self._columns:
            rows = self.engine.execute("SELECT name FROM pragma_table_xinfo(?)", (relation,)).fetchall()
            self._columns[relation] = {fold_name(name) for (name,) in rows}
        return self._columns[relation]


def _defining_positions(tokens: list[Token]) -> set[int]:
    """Positions of names a statement defines or qualifies rather than reads: an alias (``AS x``), a
    qualifier or a qualified name (``t."x"``), a collation, a window's name, a column an UPDATE's SET
    writes, and the names in a column list (``INSERT INTO t ("a")``, ``ON CONFLICT ("a")``,
    ``WITH x ("a") AS``)."""
    found = set()
    assigning = False  # between SET and the end of its assignments: "x" = ... names a column to write
    for n in range(len(tokens)):
        before = tokens[n - 1] if n else None
        word = tokens[n].upper
        if word == "SET":
            assigning = True
        elif word in ("WHERE", "FROM", "RETURNING", "END") or tokens[n].text == ";":
            assigning = False
        if before is not None and (before.text == "." or before.upper in ("AS", "COLLATE", "OVER", "WINDOW")):
            found.add(n)
        elif n + 1 < len(tokens) and tokens[n + 1].text == ".":
            found.add(n)
        elif assigning and n + 1 < len(tokens) and tokens[n + 1].text == "=" and before is not None and (before.upper == "SET" or before.text == ","):
            found.add(n)
    for n, token in enumerate(tokens):
        if token.text != "(" or not n:
            continue
        after_list = _closing(tokens, n)
        following = [tokens[p].upper or tokens[p].text for p in range(after_list + 1, min(after_list + 3, len(tokens)))]
        into = n >= 2 and tokens[n - 2].upper == "INTO"
        cte = following[:1] == ["AS"] and following[1:2] in (["("], ["MATERIALIZED"], ["NOT"])  # WITH x ("a") AS (...)
        if into or tokens[n - 1].upper == "CONFLICT" or cte:
            found.update(range(n + 1, after_list))
    return found


def _closing(tokens: list[Token], opening: int) -> int:
    """The position of the parenthesis that closes the one at ``opening`` (the end if none does)."""
    depth = 0
    for n in range(opening, len(tokens)):
        depth += {"(": 1, ")": -1}.get(tokens[n].text, 0)
        if depth == 0:
            return n
    return len(tokens)


def trigger_event(sql: str) -> str:
    """INSERT, UPDATE or DELETE: the event a CREATE TRIGGER statement fires on."""
    tokens = tokenize(sql)
    words = [token.upper for token in tokens]
    position = words.index("TRIGGER") + 1 if "TRIGGER" in words else 0
    if words[position : position + 3] == ["IF", "NOT", "EXISTS"]:
        position += 3
    # skip the trigger's name (``name`` or ``schema.name``), which may itself read like a keyword
    position += 3 if position + 1 < len(tokens) and tokens[position + 1].text == "." else 1
    return next((word for word in words[position:] if word in _EVENTS), "INSERT")


def _firing_statement(engine: Engine, table: str, event: str) -> str | None:
    quoted = quote_identifier(table)
    if event == "INSERT":
        return f"EXPLAIN INSERT INTO {quoted} DEFAULT VALUES"
    if event == "DELETE":
        return f"EXPLAIN DELETE FROM {quoted}"
    columns = [row[0] for row in engine.execute("SELECT name FROM pragma_table_xinfo(?) WHERE hidden = 0", (table,)).fetchall()]
    if not columns:
        return None
    assignments = ", ".join(f"{quote_identifier(column)} = {quote_identifier(column)}" for column in columns)
    return f"EXPLAIN UPDATE {quoted} SET {assignments}"


def _compile_error(engine: Engine, statement: str) -> str | None:
    """SQLite's error compiling ``statement`` (an EXPLAIN, which runs nothing), or None.

    Each call sends distinct text: a cached EXPLAIN that SQLite re-prepares after a schema
    change can crash the process (seen with SQLite 3.40), so none is ever reused."""
    try:
        engine.execute(f"{statement} /* pydsqlite check {next(_CALLS)} */").fetchall()
    except engine.Error as error:
        return str(error)
    return None


def _compile_alone(engine: Engine, statement: str, name: str, others: list[str]) -> str | None:
    """Compile ``statement`` with only trigger ``name`` of its event in place (the others are dropped
    inside a savepoint and restored), to tell which trigger of several fails."""
    if not others:
        return _compile_error(engine, statement)
    engine.execute("SAVEPOINT pydsqlite_compile_check")
    try:
        for other in others:
            engine.execute(f"DROP TRIGGER {quote_identifier(other)}")
        return _compile_error(engine, statement)
    finally:
        if not engine.connection_lost:  # a lost connection has nothing to roll back
            engine.execute("ROLLBACK TO pydsqlite_compile_check")
            engine.execute("RELEASE pydsqlite_compile_check")
