"""The one place SQL text is rendered: identifier and literal quoting, CREATE statements."""

from __future__ import annotations

import math
import re
import sqlite3
from contextlib import closing

from ..schema.objects import Check, Column, ForeignKey, Index, Table, UniqueConstraint, fold_name
from .ddl import DEFAULT_KEYWORDS, has_line_comment


def quote_identifier(name: str) -> str:
    """Quote an identifier for SQLite in grave accents, doubling embedded ones.

    Not double quotes: SQLite reads a double-quoted name that matches no column as a
    string literal (its "DQS" misfeature), so a missing column would silently become its
    own name as a value. A name in grave accents is always an identifier, or an error.
    """
    if "\x00" in name:
        raise ValueError(f"identifier {name!r} contains a NUL character")
    return "`" + name.replace("`", "``") + "`"


def renamed_spelling(name: str) -> str:
    """A table's name as SQLite writes it into the CREATE texts of the table and its indexes when
    ``ALTER TABLE … RENAME TO`` gives the table that name: in double quotes, embedded ones doubled."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: object) -> str:
    """Render a Python scalar (None, bool, int, float, str, bytes) as a safe SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            raise ValueError("NaN has no SQL literal")
        if math.isinf(value):
            return "9e999" if value > 0 else "-9e999"
        return _float_literal(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text containing a NUL character has no SQL literal")
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "X'" + bytes(value).hex().upper() + "'"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def _float_literal(value: float) -> str:
    """A literal SQLite parses back to exactly ``value``.

    SQLite's text-to-float conversion is not correctly rounded for some values near
    the bottom of the exponent range, so each candidate is checked by SQLite itself;
    the last resort scales the value into safe range and divides by powers of two (exact).
    """
    candidates = [repr(value), f"{value:.17g}"]
    scaled = value * 2.0**120
    candidates.append(f"({scaled!r} / 1073741824 / 1073741824 / 1073741824 / 1073741824)")
    with closing(sqlite3.connect(":memory:")) as scratch:
        for literal in candidates:
            if scratch.execute(f"SELECT {literal}").fetchone()[0] == value:
                return literal
    raise ValueError(f"SQLite cannot read {value!r} back exactly")


_QUOTING = re.compile(
    r"""(?:[^"'`\[/-]+|'(?:[^']|'')*'|`(?:[^`]|``)*`|\[[^\]]*\]|--[^\n]*|/\*.*?(?:\*/|\Z)|[-/'`\[])+"""
    r'|"((?:[^"]|"")*)"',
    re.DOTALL,
)
"""Double-quoted names (group 1, the body) and, between them, stretches of anything else: text, and
the strings, comments and names in grave accents or brackets that may hold a double quote, each read
whole as SQLite's tokenizer reads it (a quote left open is a character of its own)."""


def double_quotes_as_names(sql: str, name: str | None = None) -> str:
    """``sql`` with its double-quoted names (every one, or those spelling ``name``) in grave accents,
    which SQLite never reads as a string: compiling the result tells whether such a name names
    something (SQLite reads a double-quoted name that names nothing as text)."""
    wanted = None if name is None else fold_name(name)

    def requoted(match: re.Match[str]) -> str:
        body = match.group(1)
        if body is None:
            return match.group()
        spelled = body.replace('""', '"')
        return quote_identifier(spelled) if wanted is None or fold_name(spelled) == wanted else match.group()

    return _QUOTING.sub(requoted, sql)


def quote_identifiers(names: tuple[str, ...]) -> str:
    return ", ".join(quote_identifier(name) for name in names)


def parenthesized(expression: str) -> str:
    """``(expression)``, with a line break before the closing parenthesis when the expression
    ends in a ``--`` comment (which would otherwise swallow it)."""
    return f"({expression}\n)" if has_line_comment(expression) else f"({expression})"


def _constraint(name: str | None, clause: str, on_conflict: str | None = None) -> str:
    """A constraint clause with its CONSTRAINT name and ON CONFLICT action, when it has them."""
    text = f"CONSTRAINT {quote_identifier(name)} {clause}" if name else clause
    return f"{text} ON CONFLICT {on_conflict}" if on_conflict else text


def render_check(check: Check) -> str:
    return _constraint(check.name, f"CHECK {parenthesized(check.sql)}")


def render_column(column: Column, *, inline_primary_key: bool = False, table: Table | None = None) -> str:
    """The column definition as it appears inside CREATE TABLE (``table`` gives an inline
    AUTOINCREMENT key its name and ON CONFLICT action)."""
    parts = [quote_identifier(column.name)]
    if column.type:
        parts.append(column.type)
    if inline_primary_key and table is not None:
        parts.append(_constraint(table.primary_key_name, "PRIMARY KEY", table.primary_key_conflict) + " AUTOINCREMENT")
    if column.not_null:
        parts.append(_constraint(None, "NOT NULL", column.on_conflict))
    if column.default is not None:
        parts.append(f"DEFAULT {_default_expression(column.default)}")
    if column.collate:
        parts.append(f"COLLATE {render_collation(column.collate)}")
    parts.extend(render_check(check) for check in column.checks)
    if column.generated is not None:
        kind = "STORED" if column.generated_stored else "VIRTUAL"
        parts.append(f"GENERATED ALWAYS AS {parenthesized(column.generated)} {kind}")
    return " ".join(parts)


def render_collation(name: str) -> str:
    """Collation names are identifiers; plain ones stay bare, others are quoted."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else quote_identifier(name)


def _default_expression(default: str) -> str:
    """A DEFAULT clause accepts literals bare; anything else needs parentheses."""
    if _is_plain_default(default):
        return default
    return parenthesized(default)


def _is_plain_default(default: str) -> bool:
    text = default.strip()
    if text.upper() in DEFAULT_KEYWORDS:
        return True
    if text.startswith("(") and text.endswith(")"):
        return True
    if text.startswith("'") and text.endswith("'") and "'" not in text[1:-1].replace("''", ""):
        return True
    if text[:2].upper() == "X'" and text.endswith("'") and "'" not in text[2:-1]:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return all(ch not in text for ch in "_ ") and text.lower() not in ("inf", "-inf", "+inf", "nan", "infinity", "-infinity")


def render_foreign_key(foreign_key: ForeignKey) -> str:
    text = f"FOREIGN KEY ({quote_identifiers(foreign_key.columns)}) REFERENCES {quote_identifier(foreign_key.ref_table)}"
    if foreign_key.name:
        text = f"CONSTRAINT {quote_identifier(foreign_key.name)} {text}"
    if foreign_key.ref_columns:
        text += f" ({quote_identifiers(foreign_key.ref_columns)})"
    if foreign_key.on_delete != "NO ACTION":
        text += f" ON DELETE {foreign_key.on_delete}"
    if foreign_key.on_update != "NO ACTION":
        text += f" ON UPDATE {foreign_key.on_update}"
    if foreign_key.deferred:
        text += " DEFERRABLE INITIALLY DEFERRED"
    return text


def render_unique(table: Table, unique: UniqueConstraint) -> str:
    """A UNIQUE constraint, each column with its collation (where it differs from the column's own)
    and its order."""
    terms = []
    for position, name in enumerate(unique.columns):
        term = quote_identifier(name)
        column = table.column(name)
        own = ((column.collate if column else None) or "BINARY").upper()
        if position < len(unique.collations) and unique.collations[position] != own:
            term += f" COLLATE {render_collation(unique.collations[position])}"
        if position < len(unique.descending) and unique.descending[position]:
            term += " DESC"
        terms.append(term)
    return _constraint(unique.name, f"UNIQUE ({', '.join(terms)})", unique.on_conflict)


def render_create_table(table: Table, *, name: str | None = None) -> str:
    """CREATE TABLE for ``table``, optionally under another ``name`` (used by rebuilds)."""
    inline_pk = table.autoincrement and len(table.primary_key) == 1
    lines = [
        render_column(column, inline_primary_key=inline_pk and column.name == table.primary_key[0], table=table)
        for column in table.columns
    ]
    if table.primary_key and not inline_pk:
        key = f"PRIMARY KEY ({quote_identifiers(table.primary_key)})"
        lines.append(_constraint(table.primary_key_name, key, table.primary_key_conflict))
    lines.extend(render_unique(table, unique) for unique in table.uniques)
    lines.extend(render_foreign_key(fk) for fk in table.foreign_keys)
    lines.extend(render_check(check) for check in table.checks)
    body = ",\n    ".join(lines)
    options = []
    if table.without_rowid:
        options.append("WITHOUT ROWID")
    if table.strict:
        options.append("STRICT")
    suffix = (" " + ", ".join(options)) if options else ""
    return f"CREATE TABLE {quote_identifier(name or table.name)} (\n    {body}\n){suffix}"


def render_create_index(index: Index) -> str:
    """CREATE INDEX for a declared index; hand-made indexes replay their own SQL instead."""
    if index.sql is not None:
        return index.sql
    unique = "UNIQUE " if index.unique else ""
    columns = ", ".join(quote_identifier(column) for column in index.columns)
    text = f"CREATE {unique}INDEX {quote_identifier(index.name)} ON {quote_identifier(index.table)} ({columns})"
    if index.where:
        text += f" WHERE {index.where}" + ("\n" if has_line_comment(index.where) else "")
    return text


def render_drop_index(name: str) -> str:
    return f"DROP INDEX {quote_identifier(name)}"


def render_drop_table(name: str) -> str:
    return f"DROP TABLE {quote_identifier(name)}"


def render_rename_table(old: str, new: str) -> str:
    return f"ALTER TABLE {quote_identifier(old)} RENAME TO {quote_identifier(new)}"


def render_add_column(table: str, column: Column) -> str:
    return f"ALTER TABLE {quote_identifier(table)} ADD COLUMN {render_column(column)}"


def render_drop_column(table: str, column: str) -> str:
    return f"ALTER TABLE {quote_identifier(table)} DROP COLUMN {quote_identifier(column)}"


def render_rename_column(table: str, old: str, new: str) -> str:
    return f"ALTER TABLE {quote_identifier(table)} RENAME COLUMN {quote_identifier(old)} TO {quote_identifier(new)}"
