"""The deployment target language: good and bad selectors, error positions, and evaluation that agrees
with a reference evaluation over random selectors and tag sets."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgefleet.selector import (
    MAX_DEPTH,
    MAX_TERMS,
    MAX_TEXT,
    AllOf,
    AnyOf,
    Equals,
    Has,
    In,
    Not,
    NotEquals,
    Selector,
    SelectorError,
    keys_and_values,
    matches,
    overlaps,
    parse,
    render,
)

DEVICE = {"fleet": "f1", "env": "prod", "site": "berlin", "hw": "rev2", "empty": ""}


@pytest.mark.parametrize(
    ("text", "parsed", "selected"),
    [
        ("fleet=f1", Equals("fleet", "f1"), True),
        ("env != prod", NotEquals("env", "prod"), False),
        ("owner != bob", NotEquals("owner", "bob"), True),  # a device without the tag: not bob
        ("lab", Has("lab"), False),
        ("site in (berlin, paris)", In("site", ("berlin", "paris")), True),
        ("site not in (berlin,paris)", Not(In("site", ("berlin", "paris"))), False),
        ("lab not in (a)", Not(In("lab", ("a",))), True),
        (
            "fleet=f1 and env=prod and not lab",
            AllOf((Equals("fleet", "f1"), Equals("env", "prod"), Not(Has("lab")))),
            True,
        ),
        (
            "(site in (berlin, paris) or canary) and hw != rev1",
            AllOf((AnyOf((In("site", ("berlin", "paris")), Has("canary"))), NotEquals("hw", "rev1"))),
            True,
        ),
        ("a or b and c", AnyOf((Has("a"), AllOf((Has("b"), Has("c"))))), False),  # and binds tighter
        ("not not env", Not(Not(Has("env"))), True),
        ('empty=""', Equals("empty", ""), True),
        ('env="and"', Equals("env", "and"), False),  # a keyword as a value, quoted
        ("url=registry.local:5000/x@y", Equals("url", "registry.local:5000/x@y"), False),
        ("site in (berlin, berlin)", In("site", ("berlin",)), True),
    ],
)
def test_good_selectors(text: str, parsed: Selector, selected: bool) -> None:
    assert parse(text) == parsed
    assert matches(parse(text), DEVICE) is selected
    assert parse(render(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("", 0, "empty selector"),
        ("   ", 0, "empty selector"),
        ("fleet=", 6, "expected a value, found the end"),
        ("fleet==f1", 6, "expected a value, found '='"),
        ("fleet=f1 and", 12, "expected a tag name"),
        ("fleet=f1 env=prod", 9, "expected 'and', 'or' or the end, found 'env'"),
        ("(fleet=f1", 9, "expected ')', found the end"),
        ("fleet=f1)", 8, "expected 'and', 'or' or the end, found ')'"),
        ("site in berlin", 8, "expected '(', found 'berlin'"),
        ("site in ()", 9, "expected a value, found ')'"),
        ("site in (a,)", 11, "expected a value, found ')'"),
        ("and=1", 0, "expected a tag name, 'not' or '(', found 'and'"),
        ("env=or", 4, "expected a value, found 'or'"),
        ("fleet=f1 & env=prod", 9, "unexpected character '&'"),
        ('env="a"b"', 8, "unexpected character"),
        ("-x=1", 0, "is not a tag name"),
        ('env="a b"', 4, "is not a tag value"),
        ("env=\x00", 4, "unexpected character"),
        ("not", 3, "expected a tag name, 'not' or '(', found the end"),
    ],
)
def test_bad_selectors_say_where(text: str, position: int, message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse(text)
    assert caught.value.position == position
    assert message in caught.value.message
    assert caught.value.pointer().splitlines()[-1] == " " * position + "^"


def test_limits() -> None:
    with pytest.raises(SelectorError, match="longer than"):
        parse("a" * (MAX_TEXT + 1))
    with pytest.raises(SelectorError, match="more than 64 terms"):
        parse(" or ".join(f"t{n}" for n in range(MAX_TERMS + 1)))
    with pytest.raises(SelectorError, match="nested deeper"):
        parse("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(SelectorError, match="nested deeper"):
        parse("not " * (MAX_DEPTH + 1) + "a")
    with pytest.raises(SelectorError, match="more than 64 values"):
        parse(f"a in ({', '.join(str(n) for n in range(65))})")
    assert parse("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH) == Has("a")


# --- properties ------------------------------------------------------------------------------

KEYS = st.sampled_from(["fleet", "env", "site", "lab", "hw", "in", "a.b-c_1"])
VALUES = st.sampled_from(["f1", "prod", "dev", "", "or", "x:1/y@z"])
TAGS = st.dictionaries(KEYS, VALUES, max_size=5)


def reference(selector: Selector) -> Callable[[Mapping[str, str]], bool]:
    """The meaning of each term, written independently of `matches`: a predicate over tag sets."""
    if isinstance(selector, Has):
        return lambda tags: any(key == selector.key for key in tags)
    if isinstance(selector, Equals):
        return lambda tags: selector.key in tags and tags[selector.key] == selector.value
    if isinstance(selector, NotEquals):
        return lambda tags: not (selector.key in tags and tags[selector.key] == selector.value)
    if isinstance(selector, In):
        return lambda tags: any(tags.get(selector.key, None) == v for v in selector.values)
    if isinstance(selector, Not):
        inner = reference(selector.term)
        return lambda tags: not inner(tags)
    parts = [reference(t) for t in selector.terms]
    if isinstance(selector, AllOf):
        return lambda tags: sum(p(tags) for p in parts) == len(parts)
    return lambda tags: sum(p(tags) for p in parts) > 0


leaves = st.one_of(
    st.builds(Has, KEYS),
    st.builds(Equals, KEYS, VALUES),
    st.builds(NotEquals, KEYS, VALUES),
    st.builds(In, KEYS, st.lists(VALUES, min_size=1, max_size=3, unique=True).map(tuple)),
)
selectors = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.builds(AllOf, st.lists(inner, min_size=2, max_size=3).map(tuple)),
        st.builds(AnyOf, st.lists(inner, min_size=2, max_size=3).map(tuple)),
    ),
    max_leaves=12,
)


@settings(max_examples=300)
@given(selector=selectors, tags=TAGS)
def test_the_text_of_any_selector_selects_exactly_what_the_reference_does(selector: Selector, tags: dict) -> None:
    parsed = parse(render(selector))
    assert matches(parsed, tags) == reference(selector)(tags)
    assert matches(selector, tags) == reference(selector)(tags)


@given(text=st.text(max_size=80))
def test_any_text_parses_or_says_where_it_fails(text: str) -> None:
    try:
        parsed: Selector | None = parse(text)
    except SelectorError as exc:
        parsed, position = None, exc.position
    if parsed is None:
        assert 0 <= position <= len(text)
    else:
        assert parse(render(parsed)) == parsed


# --- overlap ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("env=prod", "env=dev", False),
        ("env=prod", "env!=dev", True),
        ("env=prod", "site=berlin", True),
        ("lab", "not lab", False),
        ("env in (a, b)", "env not in (a, b)", False),
        ("env in (a, b)", "env in (b, c)", True),
        ("env!=prod", "not env", True),
        ("fleet=f1 and env=prod and not lab", "fleet=f1 and lab", False),
        ("fleet=f1 and (env=prod or env=dev)", "fleet=f2 or env=test", False),
        ("hw", "hw!=rev1 and hw!=rev2", True),
    ],
)
def test_overlap_of_examples(first: str, second: str, expected: bool) -> None:
    assert overlaps(parse(first), parse(second)) is expected
    assert overlaps(parse(second), parse(first)) is expected


@settings(max_examples=300, deadline=None)
@given(first=selectors, second=selectors)
def test_overlap_is_true_exactly_when_some_tag_set_matches_both(first: Selector, second: Selector) -> None:
    # Exhaustive reference: every assignment of the keys either reads, over the whole value vocabulary
    # plus one value neither names and "absent".
    keys = sorted(set(keys_and_values(first)) | set(keys_and_values(second)))
    assume(len(keys) <= 4)
    choices = [None, "f1", "prod", "dev", "", "or", "x:1/y@z", "other"]
    witness = any(
        matches(first, tags) and matches(second, tags)
        for combo in itertools.product(choices, repeat=len(keys))
        for tags in [{k: v for k, v in zip(keys, combo, strict=True) if v is not None}]
    )
    assert overlaps(first, second) is witness
