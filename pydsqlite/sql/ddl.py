"""Reads the parts of CREATE TABLE / CREATE INDEX text that PRAGMAs do not report.

A small tokenizer splits SQLite DDL into tokens that remember their position, so
expression text (CHECK, GENERATED, partial-index WHERE) is cut out of the original
statement verbatim.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import NamedTuple

from ..schema.objects import fold_name

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))
  | (?P<string>'(?:[^']|'')*')
  | (?P<blob>[xX]'[0-9a-fA-F]*')
  | (?P<quoted>"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\])
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|0[xX][0-9a-fA-F]+)
  | (?P<word>[A-Za-z_\u0080-\U0010FFFF][A-Za-z0-9_$\u0080-\U0010FFFF]*)
  | (?P<variable>[?:@$][A-Za-z0-9_]*)
  | (?P<op>\|\||<<|>>|<=|>=|==|!=|<>|->>|->|[-+*/%&|<>=~(),;.])
    """,
    re.VERBOSE | re.DOTALL | re.ASCII,
)
"""ASCII classes, as SQLite's tokenizer has: a no-break space or another script's digit is part of a name there."""


class Token(NamedTuple):
    """One token with its position in the statement (a tuple: these are made by the thousand)."""

    kind: str
    text: str
    start: int
    end: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else ""

    @property
    def identifier(self) -> str:
        """The identifier this token names, unquoted."""
        if self.kind == "quoted":
            body = self.text[1:-1]
            if self.text[0] == '"':
                return body.replace('""', '"')
            if self.text[0] == "`":
                return body.replace("``", "`")
            return body
        if self.kind == "string":
            return self.text[1:-1].replace("''", "'")
        return self.text


def tokenize(sql: str) -> list[Token]:
    """Split SQL into tokens, dropping white space and comments; a stray character becomes an "op"."""
    tokens: list[Token] = []
    position = 0
    length = len(sql)
    for match in _TOKEN.finditer(sql):
        start = match.start()
        if start != position:
            tokens.extend(Token("op", sql[i], i, i + 1) for i in range(position, start) if not sql[i].isspace())
        kind = match.lastgroup
        if kind != "space":
            tokens.append(Token(kind, match.group(), start, match.end()))  # type: ignore[arg-type]
        position = match.end()
    if position < length:
        tokens.extend(Token("op", sql[i], i, i + 1) for i in range(position, length) if not sql[i].isspace())
    return tokens


def ends_inside_comment(sql: str) -> bool:
    """Whether ``sql`` ends inside a ``/*`` comment it never closes (SQLite reads one to the end of the text)."""
    last = collections.deque(_TOKEN.finditer(sql), maxlen=1)
    text = last[0].group() if last and last[0].lastgroup == "space" else ""
    return text.startswith("/*") and not (len(text) >= 4 and text.endswith("*/"))  # "/*/" opens one


def normalize_expression(sql: str, renames: dict[str, str] | None = None, columns: Collection[str] | None = None) -> str:
    """A comparable form of an SQL expression: tokens joined by single spaces, keywords and
    identifiers case-folded as SQLite folds them (ASCII letters only), identifiers quoted one way;
    ``renames`` maps folded old identifiers to new ones (to compare across a column rename).

    ``columns``: the folded names a double-quoted token may name there (the table's columns). SQLite
    reads a ``"x"`` that names none of them as the string ``'x'``, so it compares as that string.
    Without ``columns`` (a view, a trigger) such a token keeps its case: it may be either."""
    out = []
    for token in tokenize(sql):
        kind = token.kind
        if kind == "quoted" and token.text[0] == '"' and (columns is None or fold_name(token.identifier) not in columns):
            text = token.identifier
            out.append("'" + text.replace("'", "''") + "'" if columns is not None else '"' + text.replace('"', '""') + '"')
        elif kind == "quoted" or (kind == "word" and not _is_keyword(token.text)):
            name = fold_name(token.identifier)
            if renames:
                name = fold_name(renames.get(name, name))
            out.append('"' + name + '"')
        elif kind == "word":
            out.append(token.text.lower())
        else:
            out.append(token.text)
    return " ".join(out)


def default_as_text(default: str) -> str | None:
    """A DEFAULT written as one bare or quoted name (``DEFAULT open``, ``DEFAULT "open"``) as the
    string literal SQLite takes it for (``'open'``); None for any other default. Written anew, a
    DEFAULT that is no plain literal goes in parentheses, where such a name would be a column."""
    if not default or default[0] in "'(0123456789+-.":  # the common literals, without tokenizing
        return None
    tokens = tokenize(default)
    if len(tokens) != 1:
        return None
    (token,) = tokens
    if token.kind == "quoted" or (token.kind == "word" and token.upper not in DEFAULT_KEYWORDS):
        return "'" + token.identifier.replace("'", "''") + "'"
    return None


DEFAULT_KEYWORDS = frozenset({"NULL", "TRUE", "FALSE", "CURRENT_TIME", "CURRENT_DATE", "CURRENT_TIMESTAMP"})
"""The keywords a DEFAULT may hold bare (any other lone word there is text)."""


_KEYWORDS = frozenset(
    """AND OR NOT IS NULL IN LIKE GLOB REGEXP MATCH BETWEEN CASE WHEN THEN ELSE END CAST AS
    COLLATE ESCAPE EXISTS SELECT FROM WHERE TRUE FALSE CURRENT_TIME CURRENT_DATE
    CURRENT_TIMESTAMP DISTINCT""".split()
)


def _is_keyword(word: str) -> bool:
    return word.upper() in _KEYWORDS


@dataclass(frozen=True)
class Named:
    """A constraint clause's CONSTRAINT name and ON CONFLICT action (either may be absent)."""

    name: str | None = None
    on_conflict: str | None = None


@dataclass
class ColumnExtras:
    """What CREATE TABLE says about one column beyond PRAGMA table_xinfo."""

    collate: str | None = None
    checks: list[tuple[str, str | None]] = field(default_factory=list)
    """(expression, constraint name) of each CHECK."""
    generated: str | None = None
    generated_stored: bool = False
    autoincrement: bool = False
    not_null: Named | None = None
    primary_key: Named | None = None
    key_descending: bool = False
    """``PRIMARY KEY DESC`` on the column: for an INTEGER column, SQLite's quirk then makes an
    ordinary key (which takes NULL and text), not an alias of the rowid."""
    unique: Named | None = None
    reference: tuple[str | None, bool] | None = None
    """(constraint name, deferred) of an inline REFERENCES clause."""


@dataclass
class TableExtras:
    """What CREATE TABLE says beyond the PRAGMAs: per-column extras and table clauses."""

    columns: dict[str, ColumnExtras] = field(default_factory=dict)
    checks: list[tuple[str, str | None]] = field(default_factory=list)
    uniques: dict[tuple[str, ...], Named] = field(default_factory=dict)
    """Folded column names of each table-level UNIQUE → its name and ON CONFLICT action."""
    primary_key: Named | None = None
    foreign_keys: dict[tuple[str, ...], tuple[str | None, bool]] = field(default_factory=dict)
    """Folded columns of each table-level FOREIGN KEY → (constraint name, deferred)."""
    strict: bool = False
    without_rowid: bool = False


_EXTRA_WORDS = ("CHECK", "COLLATE", "GENERATED", "AUTOINCREMENT", "UNIQUE", "STRICT", "ROWID", "CONFLICT", "CONSTRAINT", "DEFERRABLE")
_EXTRA_SHORT_WORDS = re.compile(r"\bAS\b|\bDESC\b")
"""Words that only count alone: substrings of column names (``last``, ``description``) are no sign."""


def _might_have_extras(upper_sql: str) -> bool:
    """Whether a CREATE TABLE text (in upper case) may say something the PRAGMAs do not report: a
    substring test per word (a regex alternation of them all costs five times as much)."""
    return any(word in upper_sql for word in _EXTRA_WORDS) or (
        ("AS" in upper_sql or "DESC" in upper_sql) and _EXTRA_SHORT_WORDS.search(upper_sql) is not None
    )
_CONSTRAINT_STARTS = {"CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"}


def parse_create_table(sql: str) -> TableExtras:
    """Extract what the PRAGMAs do not report: CHECKs, COLLATE, GENERATED, AUTOINCREMENT,
    constraint names, ON CONFLICT actions, deferred foreign keys and table options."""
    extras = TableExtras()
    if not _might_have_extras(sql.upper()):
        return extras  # the common case costs a few substring tests instead of a tokenization
    tokens = tokenize(sql)
    open_index = next((i for i, t in enumerate(tokens) if t.text == "("), None)
    if open_index is None:
        return extras
    close_index = _matching_paren(tokens, open_index)
    for part in _split_top_level(tokens[open_index + 1 : close_index]):
        if not part:
            continue
        if part[0].upper in _CONSTRAINT_STARTS:
            _read_table_constraint(sql, part, extras)
        else:
            extras.columns[part[0].identifier] = _read_column(sql, part)
    options = {t.upper for t in tokens[close_index + 1 :]}
    extras.strict = "STRICT" in options
    extras.without_rowid = "ROWID" in options
    return extras


def _matching_paren(tokens: list[Token], open_index: int) -> int:
    depth = 0
    for index in range(open_index, len(tokens)):
        if tokens[index].text == "(":
            depth += 1
        elif tokens[index].text == ")":
            depth -= 1
            if depth == 0:
                return index
    return len(tokens)


def _split_top_level(tokens: list[Token]) -> list[list[Token]]:
    parts: list[list[Token]] = [[]]
    depth = 0
    for token in tokens:
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        if token.text == "," and depth == 0:
            parts.append([])
        else:
            parts[-1].append(token)
    return parts


def _paren_text(sql: str, tokens: list[Token], open_index: int) -> tuple[str, int]:
    """The verbatim text inside the parentheses opening at ``open_index``, and the closing index."""
    close_index = _matching_paren(tokens, open_index)
    if close_index >= len(tokens):
        return sql[tokens[open_index].end :].strip(), close_index
    return sql[tokens[open_index].end : tokens[close_index].start].strip(), close_index


def _conflict(part: list[Token], index: int) -> str | None:
    """The action of an ``ON CONFLICT action`` clause starting at ``index``, if there is one."""
    if index + 2 < len(part) and part[index].upper == "ON" and part[index + 1].upper == "CONFLICT":
        return part[index + 2].upper
    return None


def _deferred(part: list[Token], index: int) -> bool:
    """Whether the foreign-key clause from ``index`` on says DEFERRABLE INITIALLY DEFERRED (not NOT DEFERRABLE)."""
    words = [token.upper for token in part[index:]]
    for position, word in enumerate(words):
        if word == "DEFERRABLE" and words[position + 1 : position + 3] == ["INITIALLY", "DEFERRED"]:
            return position == 0 or words[position - 1] != "NOT"
    return False


def _read_column(sql: str, part: list[Token]) -> ColumnExtras:
    column = ColumnExtras()
    name: str | None = None  # of the constraint that follows CONSTRAINT name
    index = 1
    while index < len(part):
        word = part[index].upper
        if word == "CONSTRAINT" and index + 1 < len(part):
            name = part[index + 1].identifier
            index += 2
            continue
        if word == "COLLATE" and index + 1 < len(part):
            column.collate = part[index + 1].identifier
            index += 2
            name = None
            continue
        if word == "CHECK" and index + 1 < len(part) and part[index + 1].text == "(":
            text, close = _paren_text(sql, part, index + 1)
            column.checks.append((text, name))
            index = close + 1
            name = None
            continue
        if word == "AS" and index + 1 < len(part) and part[index + 1].text == "(":
            text, close = _paren_text(sql, part, index + 1)
            column.generated = text
            column.generated_stored = close + 1 < len(part) and part[close + 1].upper == "STORED"
            index = close + 1
            name = None
            continue
        if word == "PRIMARY":
            column.key_descending = index + 2 < len(part) and part[index + 2].upper == "DESC"
            after = index + 2 + (index + 2 < len(part) and part[index + 2].upper in ("ASC", "DESC"))
            column.primary_key, name = Named(name, _conflict(part, after)), None
        elif word == "NOT" and index + 1 < len(part) and part[index + 1].upper == "NULL":
            column.not_null, name = Named(name, _conflict(part, index + 2)), None
        elif word == "UNIQUE":
            column.unique, name = Named(name, _conflict(part, index + 1)), None
        elif word == "REFERENCES":
            column.reference, name = (name, _deferred(part, index)), None
        elif word in ("DEFAULT", "NULL", "GENERATED"):
            name = None
        if word == "AUTOINCREMENT":
            column.autoincrement = True
        if part[index].text == "(":
            index = _matching_paren(part, index) + 1
            continue
        index += 1
    return column


def _read_table_constraint(sql: str, part: list[Token], extras: TableExtras) -> None:
    index = 0
    name = None
    if part[0].upper == "CONSTRAINT" and len(part) > 1:
        name = part[1].identifier
        index = 2
    if index + 1 >= len(part):
        return
    word = part[index].upper
    opening = index + 1 if part[index + 1].text == "(" else index + 2  # PRIMARY KEY ( / FOREIGN KEY ( / UNIQUE (
    if word == "CHECK" and part[index + 1].text == "(":
        text, _ = _paren_text(sql, part, index + 1)
        extras.checks.append((text, name))
    elif word in ("UNIQUE", "PRIMARY", "FOREIGN") and opening < len(part) and part[opening].text == "(":
        close = _matching_paren(part, opening)
        columns = tuple(fold_name(item[0].identifier) for item in _split_top_level(part[opening + 1 : close]) if item)
        if word == "UNIQUE":
            extras.uniques[columns] = Named(name, _conflict(part, close + 1))
        elif word == "PRIMARY":
            extras.primary_key = Named(name, _conflict(part, close + 1))
        else:
            extras.foreign_keys[columns] = (name, _deferred(part, close + 1))


def has_line_comment(sql: str) -> bool:
    """Whether ``sql`` holds a ``--`` comment, which would swallow a closing parenthesis written after it."""
    return any(match.lastgroup == "space" and match.group().startswith("--") for match in _TOKEN.finditer(sql))


def parse_index_where(sql: str) -> str | None:
    """The WHERE clause of a partial index, verbatim, or None."""
    tokens = tokenize(sql)
    open_index = next((i for i, t in enumerate(tokens) if t.text == "("), None)
    if open_index is None:
        return None
    close_index = _matching_paren(tokens, open_index)
    rest = tokens[close_index + 1 :]
    if rest and rest[0].upper == "WHERE" and len(rest) > 1:
        end = rest[-1].start if rest[-1].text == ";" else len(sql)
        return sql[rest[1].start : end].strip()
    return None


def parse_index_terms(sql: str) -> list[str]:
    """The indexed terms of a CREATE INDEX, verbatim (names or expressions)."""
    tokens = tokenize(sql)
    open_index = next((i for i, t in enumerate(tokens) if t.text == "("), None)
    if open_index is None:
        return []
    close_index = _matching_paren(tokens, open_index)
    terms = []
    for part in _split_top_level(tokens[open_index + 1 : close_index]):
        if part:
            terms.append(sql[part[0].start : part[-1].end])
    return terms


def strip_sort_order(term: str) -> str:
    """An indexed term without its trailing ASC/DESC (which orders, but does not compare)."""
    tokens = tokenize(term)
    if len(tokens) > 1 and tokens[-1].upper in ("ASC", "DESC"):
        return term[: tokens[-1].start].rstrip()
    return term


def identifiers_in(sql: str) -> set[str]:
    """Every identifier-like word or quoted name in an expression, case-folded."""
    return {token.identifier.lower() for token in tokenize(sql) if token.kind in ("word", "quoted")}


def split_statements(sql: str) -> list[tuple[int, int, list[Token]]]:
    """The statements of a script as (start offset, end offset, tokens), split at top-level ``;``.

    A ``;`` inside a trigger body (``BEGIN … END``) does not end the statement.
    """
    statements: list[tuple[int, int, list[Token]]] = []
    current: list[Token] = []
    depth = 0
    for token in tokenize(sql):
        if token.upper == "BEGIN" and current and current[0].upper == "CREATE":
            depth += 1
        elif token.upper == "END" and depth:
            depth -= 1
        if token.text == ";" and depth == 0:
            if current:
                statements.append((current[0].start, token.end, current))
            current = []
        else:
            current.append(token)
    if current:
        statements.append((current[0].start, current[-1].end, current))
    return statements


def table_body_columns(tokens: list[Token]) -> tuple[str | None, list[tuple[int, str]]]:
    """For CREATE TABLE tokens: the table name and each column definition's (start offset, name)."""
    open_index = next((i for i, t in enumerate(tokens) if t.text == "("), None)
    if open_index is None or open_index == 0:
        return None, []
    name_token = tokens[open_index - 1]
    close_index = _matching_paren(tokens, open_index)
    columns = [
        (part[0].start, part[0].identifier)
        for part in _split_top_level(tokens[open_index + 1 : close_index])
        if part and part[0].upper not in _CONSTRAINT_STARTS
    ]
    return name_token.identifier, columns
