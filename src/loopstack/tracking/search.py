"""The run filter language, parsed by hand and compiled to SQLAlchemy with bound values.

Grammar (keywords are case-insensitive)::

    expr       := conjunct ("or" conjunct)*
    conjunct   := atom ("and" atom)*
    atom       := "(" expr ")" | comparison
    comparison := field op value | field ["not"] "in" "(" value ("," value)* ")"
                | field "is" ["not"] "null"
    field      := (metrics | params | tags | attributes) "." name | attribute
    op         := = | != | <> | < | <= | > | >= | like | ilike

``metrics.acc > 0.9 and params.lr = '0.01' and tags.team = 'x'`` reads as an
MLflow user expects. Metric values compare as numbers; params and tags as
text, so their values must be quoted. Names are checked against a pattern
and every value is a bound parameter: no filter can inject SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from loopstack.core.errors import FilterError

ATTRIBUTES = {
    "id": "id",
    "run_id": "id",
    "name": "name",
    "run_name": "name",
    "status": "status",
    "start_time": "start_time",
    "end_time": "end_time",
    "parent_id": "parent_id",
    "experiment_id": "experiment_id",
}
NUMERIC_ATTRIBUTES = {"start_time", "end_time", "experiment_id"}
PREFIXES = {
    "metric": "metrics",
    "metrics": "metrics",
    "param": "params",
    "params": "params",
    "tag": "tags",
    "tags": "tags",
    "attribute": "attributes",
    "attributes": "attributes",
    "attr": "attributes",
    "run": "attributes",
}
OPERATORS = ("<=", ">=", "!=", "<>", "=", "<", ">")
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_]))
    | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
    | (?P<quoted>`[^`]+`)
    | (?P<op><=|>=|!=|<>|=|<|>)
    | (?P<punct>[(),])
    | (?P<word>[A-Za-z_][A-Za-z0-9_./:\-]*)
    )""",
    re.VERBOSE,
)

_ESCAPE = re.compile(r"\\([\\'\"])")


@dataclass(frozen=True)
class Field:
    kind: str  # metrics | params | tags | attributes
    name: str

    def __str__(self) -> str:
        return f"{self.kind}.{self.name}"


@dataclass(frozen=True)
class Comparison:
    field: Field
    op: str  # =, !=, <, <=, >, >=, like, ilike, in, not in, is null, is not null
    value: Any


@dataclass(frozen=True)
class BoolOp:
    op: str  # and | or
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    position: int


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            start = len(text) - len(text[position:].lstrip())
            raise FilterError(f"cannot read filter at character {start}: {text[start : start + 20]!r}")
        kind = match.lastgroup or ""
        tokens.append(Token(kind, match.group(kind), match.start(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    def parse(self) -> Any:
        if not self.tokens:
            return None
        tree = self.expr()
        if self.index < len(self.tokens):
            self.fail(f"unexpected {self.peek().text!r}; join conditions with 'and' or 'or'")
        return tree

    def expr(self) -> Any:
        items = [self.conjunct()]
        while self.accept_word("or"):
            items.append(self.conjunct())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def conjunct(self) -> Any:
        items = [self.atom()]
        while self.accept_word("and"):
            items.append(self.atom())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def atom(self) -> Any:
        if self.accept("punct", "("):
            inner = self.expr()
            self.expect("punct", ")")
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        field = self.field()
        token = self.next("an operator such as =, >, like or in")
        word = token.text.lower()
        if token.kind == "op":
            op = "!=" if token.text == "<>" else token.text
            return self.checked(Comparison(field, op, self.value()))
        if word in ("like", "ilike"):
            return self.checked(Comparison(field, word, self.value()))
        if word == "not":
            self.expect_word("in")
            return self.checked(Comparison(field, "not in", self.values()))
        if word == "in":
            return self.checked(Comparison(field, "in", self.values()))
        if word == "is":
            negate = self.accept_word("not")
            self.expect_word("null")
            return Comparison(field, "is not null" if negate else "is null", None)
        self.fail(f"expected an operator after {field}, got {token.text!r}", token)
        raise AssertionError  # unreachable

    def field(self) -> Field:
        token = self.next("a field such as metrics.acc, params.lr or status")
        if token.kind == "quoted":
            self.fail(f"{token.text} needs a prefix such as metrics.{token.text}", token)
        if token.kind != "word":
            self.fail(f"expected a field such as metrics.acc, got {token.text!r}", token)
        prefix, _, rest = token.text.partition(".")
        if not rest and not token.text.endswith(".") and self.peek_is("quoted"):
            self.fail(f"write {token.text}.`name` with a dot before the quoted name", token)
        if prefix.lower() in PREFIXES and (rest or token.text.endswith(".")):
            kind = PREFIXES[prefix.lower()]
            name = rest
            if token.text.endswith(".") and self.peek_is("quoted"):
                name = self.next("a name").text[1:-1]
            return self._checked_field(Field(kind, name), token)
        if token.text.lower() in ATTRIBUTES:
            return Field("attributes", ATTRIBUTES[token.text.lower()])
        self.fail(
            f"unknown field {token.text!r}; use metrics.<name>, params.<name>, tags.<name> "
            f"or one of {', '.join(sorted(ATTRIBUTES))}",
            token,
        )
        raise AssertionError

    def _checked_field(self, field: Field, token: Token) -> Field:
        if not field.name:
            self.fail(f"{token.text!r} has no name after the prefix", token)
        if field.kind == "attributes":
            if field.name.lower() not in ATTRIBUTES:
                self.fail(f"unknown attribute {field.name!r}; use one of {', '.join(sorted(ATTRIBUTES))}", token)
            return Field("attributes", ATTRIBUTES[field.name.lower()])
        return field

    def value(self) -> Any:
        token = self.next("a value")
        if token.kind == "number":
            number = float(token.text)
            return (
                int(number)
                if number.is_integer() and "." not in token.text and "e" not in token.text.lower()
                else number
            )
        if token.kind == "string":
            body = token.text[1:-1]
            if token.text[0] == "'":
                body = body.replace("''", "'")
            # one pass, so that an escaped backslash can end a value ('C:\\data\\'); other backslashes stay
            return _ESCAPE.sub(r"\1", body)
        self.fail(f"expected a number or a quoted string, got {token.text!r}", token)
        raise AssertionError

    def values(self) -> tuple[Any, ...]:
        self.expect("punct", "(")
        items = [self.value()]
        while self.accept("punct", ","):
            items.append(self.value())
        self.expect("punct", ")")
        return tuple(items)

    def checked(self, comparison: Comparison) -> Comparison:
        field, values = comparison.field, comparison.value
        values = values if isinstance(values, tuple) else (values,)
        numeric = _is_numeric(field)
        if comparison.op in ("like", "ilike") and numeric:
            self.fail(f"{field} is numeric; 'like' only applies to params, tags and text attributes")
        for value in values:
            if numeric and not isinstance(value, (int, float)):
                self.fail(f"{field} is numeric; compare it with a number, not {value!r}")
            if not numeric and not isinstance(value, str):
                self.fail(f"{field} compares as text; quote the value: {field} {comparison.op} '{value}'")
        return comparison

    # -- token helpers -----------------------------------------------------
    def peek(self) -> Token:
        return self.tokens[self.index]

    def peek_is(self, kind: str) -> bool:
        return self.index < len(self.tokens) and self.tokens[self.index].kind == kind

    def next(self, wanted: str) -> Token:
        if self.index >= len(self.tokens):
            self.fail(f"filter ends early; expected {wanted}")
        token = self.tokens[self.index]
        self.index += 1
        return token

    def accept(self, kind: str, text: str) -> bool:
        if (
            self.index < len(self.tokens)
            and self.tokens[self.index].kind == kind
            and self.tokens[self.index].text == text
        ):
            self.index += 1
            return True
        return False

    def accept_word(self, word: str) -> bool:
        if self.index < len(self.tokens):
            token = self.tokens[self.index]
            if token.kind == "word" and token.text.lower() == word:
                self.index += 1
                return True
        return False

    def expect(self, kind: str, text: str) -> None:
        if not self.accept(kind, text):
            self.fail(f"expected {text!r}")

    def expect_word(self, word: str) -> None:
        if not self.accept_word(word):
            self.fail(f"expected {word!r}")

    def fail(self, message: str, token: Token | None = None) -> None:
        if token is None and self.index < len(self.tokens):
            token = self.tokens[self.index]
        where = f" at character {token.position}" if token is not None else " at the end"
        raise FilterError(f"bad filter {self.text!r}{where}: {message}")


def _is_numeric(field: Field) -> bool:
    return field.kind == "metrics" or (field.kind == "attributes" and field.name in NUMERIC_ATTRIBUTES)


def _as_floats(value: Any) -> Any:
    """Numbers bound as floats: an int literal reaches the driver as a 64-bit (PostgreSQL: the column's 32-bit)
    integer, and one beyond that range fails the whole search instead of comparing."""
    return tuple(float(item) for item in value) if isinstance(value, tuple) else float(value)


def parse_filter(text: str | None) -> Any:
    """Parse a filter string into a tree of Comparison and BoolOp (None if empty)."""
    return _Parser(text or "").parse()


@dataclass(frozen=True)
class OrderKey:
    field: Field
    descending: bool


def parse_order_by(clauses: list[str] | str | None) -> list[OrderKey]:
    """Parse ``["metrics.auc desc", "start_time"]`` into order keys."""
    if not clauses:
        return []
    if isinstance(clauses, str):
        clauses = [clauses]
    keys = []
    for clause in clauses:
        parts = clause.strip().rsplit(None, 1)
        descending = False
        if len(parts) == 2 and parts[1].lower() in ("asc", "desc"):
            descending = parts[1].lower() == "desc"
            clause = parts[0]
        parser = _Parser(clause)
        field = parser.field()
        if parser.index != len(parser.tokens):
            raise FilterError(f"bad order_by {clause!r}: use '<field> [asc|desc]', e.g. 'metrics.auc desc'")
        keys.append(OrderKey(field, descending))
    return keys


def compile_filter(tree: Any, tables: dict[str, Any], dialect: str = "postgresql") -> Any:
    """SQLAlchemy condition on the runs table for a parsed filter, for the database `dialect`."""
    from sqlalchemy import and_, or_

    if tree is None:
        return None
    if isinstance(tree, BoolOp):
        parts = [compile_filter(item, tables, dialect) for item in tree.items]
        return and_(*parts) if tree.op == "and" else or_(*parts)
    return _compile_comparison(tree, tables, dialect)


def _compile_comparison(comparison: Comparison, tables: dict[str, Any], dialect: str) -> Any:
    from sqlalchemy import exists, select

    runs = tables["runs"]
    field = comparison.field
    if _is_numeric(field) and comparison.value is not None:
        comparison = Comparison(field, comparison.op, _as_floats(comparison.value))
    if field.kind == "attributes":
        return _apply(runs.c[field.name], comparison, dialect)
    table = tables["latest_metrics" if field.kind == "metrics" else field.kind]
    logged = exists(select(table.c.run_id).where(table.c.run_id == runs.c.id, table.c.key == field.name))
    if comparison.op in ("is null", "is not null"):  # whether the run logged the key: a NaN metric's NULL counts
        return ~logged if comparison.op == "is null" else logged
    condition = _apply(table.c.value, comparison, dialect)
    return exists(select(table.c.run_id).where(table.c.run_id == runs.c.id, table.c.key == field.name, condition))


def _apply(column: Any, comparison: Comparison, dialect: str) -> Any:
    op, value = comparison.op, comparison.value
    simple = {
        "=": column.__eq__,
        "!=": column.__ne__,
        "<": column.__lt__,
        "<=": column.__le__,
        ">": column.__gt__,
        ">=": column.__ge__,
    }
    if op in simple:
        return simple[op](value)
    if op == "like":  # SQLite's LIKE ignores the case of ASCII letters; its GLOB does not
        glob = _like_as_glob(value)
        return column.op("GLOB")(glob) if dialect == "sqlite" else column.like(value, escape="\\")
    if op == "ilike":
        _like_as_glob(value)  # refuses a pattern that ends in its escape character
        if dialect == "sqlite":  # its lower(), which ilike uses, leaves É as it is: fold as PostgreSQL does
            from sqlalchemy import func

            from loopstack.core.sqlite import UNICODE_LOWER

            return getattr(func, UNICODE_LOWER)(column).like(value.lower(), escape="\\")
        return column.ilike(value, escape="\\")
    if op == "in":
        return column.in_(list(value))
    if op == "not in":
        return column.not_in(list(value))
    if op == "is null":
        return column.is_(None)
    return column.is_not(None)


def _like_as_glob(pattern: str) -> str:
    r"""A LIKE pattern as the GLOB pattern that matches the same text, case and all: ``%`` is ``*``, ``_``
    is ``?``, a backslash makes the next character literal (PostgreSQL's default escape), and GLOB's own
    wildcards are literals in brackets.

    >>> _like_as_glob(r"run_%[1]*?\_")
    'run?*[[]1][*][?]_'
    """
    special = {"%": "*", "_": "?", "*": "[*]", "?": "[?]", "[": "[[]"}
    out, chars = [], iter(pattern)
    for char in chars:
        if char == "\\":
            char = next(chars, None)
            if char is None:
                raise FilterError(f"LIKE pattern {pattern!r} ends in its escape character; write \\\\ for a backslash")
            out.append(special[char] if char in "*?[" else char)
        else:
            out.append(special.get(char, char))
    return "".join(out)
