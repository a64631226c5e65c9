"""Deployment targets: the tag selector language, parsed into data and evaluated against a device's tags (pure).

    fleet=f1 and env=prod and not lab
    (site in (berlin, paris) or canary) and hw != rev1

Terms: ``KEY=VALUE``, ``KEY!=VALUE`` (also true when the device lacks KEY, as in Kubernetes
label selectors), ``KEY in (V1, V2, ...)``, ``KEY not in (...)`` (also true without KEY),
and ``KEY`` alone (the device has the tag, whatever its value). Terms combine with ``not``,
``and``, ``or`` (in that order of precedence) and parentheses. Keys and values are written
bare (the characters tags allow) or in double quotes (for an empty value, or one that is a
keyword); ``and``, ``or``, ``not`` and ``in`` are keywords. Errors name the position
(0-based character offset) where the text stops making sense.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edgefleet.errors import EdgefleetError

MAX_TEXT = 2048
MAX_TERMS = 64
MAX_DEPTH = 16
MAX_IN_VALUES = 64
KEYWORDS = frozenset({"and", "or", "not", "in"})
_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<op>!=|=|\(|\)|,)
      | "(?P<quoted>[^"\\\x00-\x1f]{0,128})"
      | (?P<word>[A-Za-z0-9_.\-:/@]+)
    """,
    re.VERBOSE,
)
TAG_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")
"""A tag's key, as devices carry them (the dashboard's tag filter checks with it too)."""
TAG_VALUE = re.compile(r"^[A-Za-z0-9_.\-:/@]{0,128}$")


class SelectorError(EdgefleetError, ValueError):
    """A selector that does not parse; `position` is where (0-based), `text` the whole selector."""

    def __init__(self, message: str, text: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.message = message
        self.text = text
        self.position = position

    def pointer(self) -> str:
        """The selector and a caret under the position, for a terminal."""
        return f"{self.text}\n{' ' * self.position}^"


@dataclass(frozen=True, slots=True)
class Has:
    key: str


@dataclass(frozen=True, slots=True)
class Equals:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class NotEquals:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class In:
    key: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Not:
    term: Selector


@dataclass(frozen=True, slots=True)
class AllOf:
    terms: tuple[Selector, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    terms: tuple[Selector, ...]


Selector = Has | Equals | NotEquals | In | Not | AllOf | AnyOf


def matches(selector: Selector, tags: Mapping[str, str]) -> bool:
    """Whether a device with `tags` is a target of `selector`."""
    match selector:
        case Has(key):
            return key in tags
        case Equals(key, value):
            return tags.get(key) == value
        case NotEquals(key, value):
            return tags.get(key) != value
        case In(key, values):
            return key in tags and tags[key] in values
        case Not(term):
            return not matches(term, tags)
        case AllOf(terms):
            return all(matches(t, tags) for t in terms)
        case AnyOf(terms):
            return any(matches(t, tags) for t in terms)


def render(selector: Selector) -> str:
    """Canonical text of `selector`: parses back to the same selector."""
    match selector:
        case Has(key):
            return _quote(key)
        case Equals(key, value):
            return f"{_quote(key)}={_quote(value)}"
        case NotEquals(key, value):
            return f"{_quote(key)}!={_quote(value)}"
        case In(key, values):
            return f"{_quote(key)} in ({', '.join(_quote(v) for v in values)})"
        case Not(term):
            inner = render(term)
            return f"not {inner}" if isinstance(term, (Has, Equals, NotEquals, In, Not)) else f"not ({inner})"
        case AllOf(terms):
            return " and ".join(render(t) if not isinstance(t, AnyOf) else f"({render(t)})" for t in terms)
        case AnyOf(terms):
            return " or ".join(render(t) for t in terms)


def _quote(word: str) -> str:
    return word if word and word not in KEYWORDS else f'"{word}"'


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "op", "word" (bare), "quoted", "end"
    text: str
    position: int


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        found = _TOKEN.match(text, position)
        if found is None:
            raise SelectorError(f"unexpected character {text[position]!r}", text, position)
        kind = found.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, found.group(kind), position))
        position = found.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def parse(text: str) -> Selector:
    """The selector `text` says.

    Raises:
        SelectorError: it does not parse, or passes a limit (length, terms, nesting, values).
    """
    if len(text) > MAX_TEXT:
        raise SelectorError(f"longer than {MAX_TEXT} characters", text[:80], MAX_TEXT)
    if not text.strip():
        raise SelectorError("empty selector (to target every device, use a tag all of them have)", text, 0)
    return _Parser(text, _tokens(text)).selector()


class _Parser:
    """Recursive descent: or -> and -> not -> term | ( or )."""

    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.at = 0
        self.terms = 0

    def selector(self) -> Selector:
        result = self._or(0)
        token = self._peek()
        if token.kind != "end":
            raise self._error(f"expected 'and', 'or' or the end, found {self._shown(token)}", token)
        return result

    def _or(self, depth: int) -> Selector:
        terms = self._chain("or", self._and, depth)
        return terms[0] if len(terms) == 1 else AnyOf(terms)

    def _and(self, depth: int) -> Selector:
        terms = self._chain("and", self._not, depth)
        return terms[0] if len(terms) == 1 else AllOf(terms)

    def _chain(self, word: str, operand: Callable[[int], Selector], depth: int) -> tuple[Selector, ...]:
        """`operand (word operand)*`: the operands."""
        terms = [operand(depth)]
        while self._keyword(word):
            self.at += 1
            terms.append(operand(depth))
        return tuple(terms)

    def _not(self, depth: int) -> Selector:
        if self._keyword("not"):
            token = self._peek()
            if depth >= MAX_DEPTH:
                raise self._error(f"nested deeper than {MAX_DEPTH}", token)
            self.at += 1
            return Not(self._not(depth + 1))
        return self._atom(depth)

    def _atom(self, depth: int) -> Selector:
        token = self._peek()
        if token.kind == "op" and token.text == "(":
            if depth >= MAX_DEPTH:
                raise self._error(f"nested deeper than {MAX_DEPTH}", token)
            self.at += 1
            inner = self._or(depth + 1)
            self._expect(")")
            return inner
        key = self._name(token, "a tag name, 'not' or '('")
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise self._error(f"more than {MAX_TERMS} terms", token)
        following = self._peek()
        if following.kind == "op" and following.text in ("=", "!="):
            self.at += 1
            value = self._value()
            return Equals(key, value) if following.text == "=" else NotEquals(key, value)
        if self._keyword("in"):
            self.at += 1
            return In(key, self._values())
        if self._keyword("not") and self._keyword("in", ahead=1):
            self.at += 2
            return Not(In(key, self._values()))
        return Has(key)

    def _name(self, token: _Token, wanted: str) -> str:
        if token.kind not in ("word", "quoted") or (token.kind == "word" and token.text in KEYWORDS):
            raise self._error(f"expected {wanted}, found {self._shown(token)}", token)
        if not TAG_KEY.match(token.text):
            raise self._error(f"{token.text!r} is not a tag name (letters, digits, '_', '.', '-'; up to 63)", token)
        self.at += 1
        return token.text

    def _value(self) -> str:
        token = self._peek()
        if token.kind not in ("word", "quoted") or (token.kind == "word" and token.text in KEYWORDS):
            raise self._error(f"expected a value, found {self._shown(token)} (quote a value that is a keyword)", token)
        if not TAG_VALUE.match(token.text):
            raise self._error(f"{token.text!r} is not a tag value (letters, digits, '_.-:/@'; up to 128)", token)
        self.at += 1
        return token.text

    def _values(self) -> tuple[str, ...]:
        self._expect("(")
        values = [self._value()]
        while self._peek().kind == "op" and self._peek().text == ",":
            self.at += 1
            values.append(self._value())
            if len(values) > MAX_IN_VALUES:
                raise self._error(f"more than {MAX_IN_VALUES} values", self._peek())
        self._expect(")")
        return tuple(dict.fromkeys(values))

    def _expect(self, op: str) -> None:
        token = self._peek()
        if token.kind != "op" or token.text != op:
            raise self._error(f"expected '{op}', found {self._shown(token)}", token)
        self.at += 1

    def _keyword(self, word: str, ahead: int = 0) -> bool:
        token = self.tokens[min(self.at + ahead, len(self.tokens) - 1)]
        return token.kind == "word" and token.text == word

    def _peek(self) -> _Token:
        return self.tokens[self.at]

    def _error(self, message: str, token: _Token) -> SelectorError:
        return SelectorError(message, self.text, token.position)

    @staticmethod
    def _shown(token: _Token) -> str:
        if token.kind == "end":
            return "the end"
        return f'"{token.text}"' if token.kind == "quoted" else f"'{token.text}'"


# --- overlap: could one device match both selectors? ------------------------------------

MAX_OVERLAP_STEPS = 100_000
"""Search budget of `overlaps`; past it, the answer is the cautious one (they may overlap)."""
_ABSENT = None


def keys_and_values(selector: Selector) -> dict[str, set[str]]:
    """Every tag key the selector reads, with the values it compares that key to."""
    found: dict[str, set[str]] = {}
    stack: list[Selector] = [selector]
    while stack:
        match stack.pop():
            case Has(key):
                found.setdefault(key, set())
            case Equals(key, value) | NotEquals(key, value):
                found.setdefault(key, set()).add(value)
            case In(key, values):
                found.setdefault(key, set()).update(values)
            case Not(term):
                stack.append(term)
            case AllOf(terms) | AnyOf(terms):
                stack.extend(terms)
    return found


def overlaps(first: Selector, second: Selector) -> bool:
    """Whether some set of tags matches both selectors (True when the search budget runs out).

    A selector only tells a key's values apart by the values it names, so it is enough to
    try, per key, each named value, one value named nowhere, and the key being absent.
    Partial assignments are judged three-valued, so a branch stops as soon as either
    selector is decided false.
    """
    domains: list[tuple[str, list[str | None]]] = []
    named = keys_and_values(first)
    for key, values in keys_and_values(second).items():
        named.setdefault(key, set()).update(values)
    for key, values in sorted(named.items()):
        other = "~" + max(values, key=len, default="") + "~"  # a value no selector can name
        domains.append((key, [*sorted(values), other, _ABSENT]))
    steps = 0

    def search(index: int, tags: dict[str, str], unknown: frozenset[str]) -> bool:
        nonlocal steps
        steps += 1
        if steps > MAX_OVERLAP_STEPS:
            return True
        a, b = _judge(first, tags, unknown), _judge(second, tags, unknown)
        if a is False or b is False:
            return False
        if a is True and b is True:
            return True
        key, choices = domains[index]
        for choice in choices:
            below = dict(tags) if choice is None else {**tags, key: choice}
            if search(index + 1, below, unknown - {key}):
                return True
        return False

    return search(0, {}, frozenset(key for key, _ in domains))


def _judge(selector: Selector, tags: Mapping[str, str], unknown: frozenset[str]) -> bool | None:
    """`matches` over a partial assignment: None while an unassigned key could still change the answer."""
    match selector:
        case Has(key) | Equals(key, _) | NotEquals(key, _) | In(key, _) if key in unknown:
            return None
        case Not(term):
            inner = _judge(term, tags, unknown)
            return None if inner is None else not inner
        case AllOf(terms):
            results = [_judge(t, tags, unknown) for t in terms]
            return False if False in results else (None if None in results else True)
        case AnyOf(terms):
            results = [_judge(t, tags, unknown) for t in terms]
            return True if True in results else (None if None in results else False)
        case _:
            return matches(selector, tags)
