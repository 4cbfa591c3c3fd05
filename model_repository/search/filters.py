"""Scalar filters for the match stage, parsed and re-written before they reach Milvus.

A filter such as `category == "install" and year >= 2020` is parsed with a small grammar
and printed back as a canonical Milvus expression. Nothing of the user's text reaches
Milvus verbatim: identifiers must be plain names (and, when the collection records them,
known fields), values are re-quoted, so a filter can never smuggle in another expression.

    expr   := term ("or" term)*
    term   := factor ("and" factor)*
    factor := "not" factor | "(" expr ")" | NAME op value | NAME ["not"] "in" "[" value ("," value)* "]"
    op     := == | != | < | <= | > | >=
    value  := "string" | 'string' | number | true | false
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterable

from mmsearch.errors import MmsearchError
from mmsearch.model_repository.contract import INT64_MAX, INT64_MIN, MAX_FILTER_CHARS, MAX_FILTER_DEPTH

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
KEYWORDS = {"and", "or", "not", "in", "true", "false"}
TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<op>==|!=|<=|>=|<|>)
      | (?P<punct>[()\[\],])
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


class FilterError(MmsearchError, ValueError):
    """The filter is not valid; the message says where."""


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = TOKEN.match(text, position)
        if not match:
            raise FilterError(f"unexpected character {text[position:].lstrip()[:1]!r} at position {position}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], fields: set[str] | None):
        self.tokens, self.at, self.fields, self.depth = tokens, 0, fields, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, kind: str | None = None, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (kind and token[0] != kind) or (value and token[1].lower() != value):
            wanted = value or kind or "more input"
            found = "the end" if token is None else repr(token[1])
            raise FilterError(f"expected {wanted} but found {found}")
        self.at += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "name" and token[1].lower() == word

    def expr(self) -> str:
        parts = [self.term()]
        while self.keyword("or"):
            self.take()
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"

    def term(self) -> str:
        parts = [self.factor()]
        while self.keyword("and"):
            self.take()
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"

    def factor(self) -> str:
        if self.keyword("not") or self.peek() == ("punct", "("):
            self.depth += 1
            if self.depth > MAX_FILTER_DEPTH:
                raise FilterError(f"filter is nested more than {MAX_FILTER_DEPTH} levels deep (not, parentheses)")
            try:
                return self.nested()
            finally:
                self.depth -= 1
        return self.comparison()

    def nested(self) -> str:
        if self.keyword("not"):
            self.take()
            return f"not ({self.factor()})"
        self.take("punct", "(")
        inner = self.expr()
        self.take("punct", ")")
        return inner

    def comparison(self) -> str:
        field = self.field()
        if self.keyword("in") or self.keyword("not"):
            negated = self.keyword("not")
            if negated:
                self.take()
            self.take("name", "in")
            self.take("punct", "[")
            values = [self.value()]
            while self.peek() == ("punct", ","):
                self.take()
                values.append(self.value())
            self.take("punct", "]")
            return f"{field} {'not in' if negated else 'in'} [{', '.join(values)}]"
        op = self.take("op")[1]
        return f"{field} {op} {self.value()}"

    def field(self) -> str:
        token = self.peek()
        if token is None or token[0] != "name" or token[1].lower() in KEYWORDS:
            raise FilterError(f"expected a field name but found {'the end' if token is None else repr(token[1])}")
        _, name = self.take()
        if self.fields is not None and name not in self.fields:
            raise FilterError(f"unknown field {name!r} (filterable fields: {', '.join(sorted(self.fields)) or 'none'})")
        return name

    def value(self) -> str:
        token = self.peek()
        if token is None:
            raise FilterError("expected a value but found the end")
        kind, text = self.take()
        if kind == "string":
            try:  # the token is one quoted literal; literal_eval evaluates nothing but literals
                decoded = text if CONTROL_CHARACTERS.search(text) else ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise FilterError(f"invalid string {text}") from None
            if CONTROL_CHARACTERS.search(decoded):  # raw, or written as an escape
                raise FilterError(f"string {text!r} holds a control character; filters compare printable text")
            return json.dumps(decoded, ensure_ascii=False)
        if kind == "number":
            return number_literal(text)
        if kind == "name" and text.lower() in ("true", "false"):
            return text.lower()
        raise FilterError(f"expected a value (string, number, true or false) but found {text!r}")


def number_literal(text: str) -> str:
    """A number Milvus can hold: an integer within int64, or a finite float."""
    if re.fullmatch(r"-?\d+", text):
        if not INT64_MIN <= int(text) <= INT64_MAX:
            raise FilterError(f"integer {text} is outside the 64-bit range Milvus stores")
        return text
    if not math.isfinite(float(text)):
        raise FilterError(f"number {text} is not a finite 64-bit float")
    return text


def compile_filter(text: str, fields: Iterable[str] | None = None) -> str:
    """The canonical Milvus expression for `text`; FilterError if it is not a valid filter."""
    if not isinstance(text, str):
        raise FilterError("a filter must be a string")
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"filter is {len(text)} characters long; the limit is {MAX_FILTER_CHARS}")
    if not text.strip():
        return ""
    parser = _Parser(tokenize(text), set(fields) if fields is not None else None)
    expression = parser.expr()
    if parser.peek() is not None:
        raise FilterError(f"unexpected {parser.peek()[1]!r} after a complete filter")
    return expression


def combine(*expressions: str) -> str:
    """AND of canonical expressions, skipping empty ones."""
    present = [e for e in expressions if e]
    return " and ".join(f"({e})" if len(present) > 1 else e for e in present)
