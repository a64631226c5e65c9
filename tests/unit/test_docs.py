"""The docs say what the code does: commands and flags exist, every manifest key is documented, links resolve.

Pure and fast: reads README.md and docs/*.md, walks the Typer app and the manifest's
pydantic models; nothing is run and nothing is fetched.
"""

from __future__ import annotations

import re
import shlex
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.main import get_command

from edgefleet import manifest
from edgefleet.agent import policy
from edgefleet.cli.agent import app as agent_app
from edgefleet.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
PUBLISHER_GUIDE = ROOT / "docs" / "publisher-guide.md"
PROGRAMS = {"edgefleet": get_command(app), "edgefleet-agent": get_command(agent_app)}

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
PROGRAM = re.compile(r"^(?:Exec[A-Za-z]*=)?(?:\S*/bin/)?(edgefleet(?:-agent)?)$")
"""`edgefleet`, `.venv/bin/edgefleet`, `ExecStart=/opt/edgefleet/bin/edgefleet-agent` (not `/etc/edgefleet`)."""
LONG_OPTION = re.compile(r"--[a-z][a-z0-9-]*")
SEGMENT_BREAK = re.compile(r"\s(?:;|&&|\|\||\|)\s|;\s*$|^\s*\|\s")
"""Shell command separators; `a|b` without spaces is an alternative, not a pipe."""
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.MULTILINE)


# --- reading markdown -------------------------------------------------------------------


def fenced_blocks(text: str) -> Iterator[list[str]]:
    """The lines of each fenced code block, backslash continuations joined."""
    block: list[str] | None = None
    fence = ""
    for line in text.splitlines():
        match = FENCE.match(line)
        if block is None:
            if match:
                block, fence = [], match.group(1)
            continue
        if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) and not line.strip(fence[0]):
            yield _joined(block)
            block = None
            continue
        block.append(line)
    if block is not None:
        yield _joined(block)


def _joined(lines: list[str]) -> list[str]:
    out: list[str] = []
    pending = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending)
    return out


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    kept: list[str] = []
    fence = ""
    for line in text.splitlines():
        match = FENCE.match(line)
        if not fence:
            if match:
                fence = match.group(1)
            else:
                kept.append(line)
        elif match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) and not line.strip(fence[0]):
            fence = ""
    return "\n".join(kept)


def code_spans(text: str) -> list[str]:
    """Inline code spans of the prose (paragraphs joined, so a span may wrap a line)."""
    spans = []
    for paragraph in re.split(r"\n\s*\n", prose(text)):
        joined = " ".join(line.strip() for line in paragraph.splitlines())
        spans += [match.group(2).strip() for match in CODE_SPAN.finditer(joined)]
    return spans


def code_lines(path: Path) -> Iterator[str]:
    """Every line of code in a document: inline spans and the lines of fenced blocks."""
    text = path.read_text(encoding="utf-8")
    yield from code_spans(text)
    for block in fenced_blocks(text):
        yield from block


# --- commands -----------------------------------------------------------------------------


def _words(segment: str) -> list[str]:
    """Shell words of a segment, without a trailing comment and without a console prompt."""
    segment = re.sub(r"^\s*[$#]\s", "", segment)
    segment = re.sub(r"\s#\s.*$", "", segment)
    try:
        return shlex.split(segment)
    except ValueError:  # an unbalanced quote in an abridged example: plain words are enough here
        return segment.split()


def _options(command: Any) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", ()) if opt.startswith("--")}


def command_uses(line: str) -> Iterator[tuple[str, list[Any], list[str]]]:
    """Each `edgefleet ...` in a line: (what was written, the commands it names, the long options after it).

    `a|b` names alternatives (each must exist). A word in capitals (`NOUN`, `ID`), a
    bracket or an option ends the command's path; a word ending in `,` ends it too (prose
    lists such as `release build, sign`). An unknown lower-case word after a group is an
    error, reported as a command of `None`.
    """
    for segment in SEGMENT_BREAK.split(line):
        words = _words(segment)
        for index, word in enumerate(words):
            match = PROGRAM.match(word)
            if not match:
                continue
            commands: list[Any] = [PROGRAMS[match.group(1)]]
            path = [match.group(1)]
            rest = words[index + 1 :]
            end = next((i for i, w in enumerate(rest) if i > 0 and PROGRAM.match(w)), len(rest))
            rest = rest[:end]
            for raw in rest:
                name = raw.rstrip(",.:;)")
                groups = [c for c in commands if getattr(c, "commands", None)]
                if not groups or not re.fullmatch(r"[a-z][a-z0-9-]*(\|[a-z][a-z0-9-]*)*", name):
                    break
                chosen = []
                for alternative in name.split("|"):
                    found = [g.commands[alternative] for g in groups if alternative in g.commands]
                    chosen += found or [None]
                path.append(name)
                commands = chosen
                if None in commands or raw != name:
                    break
            options = [m.group(0) for w in rest for m in LONG_OPTION.finditer(w.split("=", 1)[0])]
            yield " ".join(path), commands, options


def _command_cases() -> list[Any]:
    cases = []
    for doc in DOCS:
        for line in code_lines(doc):
            for written, commands, options in command_uses(line):
                cases.append(pytest.param(written, commands, options, id=f"{doc.name}: {written}"))
    return cases


COMMAND_CASES = _command_cases()


def test_the_docs_name_commands_at_all() -> None:
    assert len(COMMAND_CASES) > 100, "the scan found too few commands: is the markdown reader broken?"


@pytest.mark.parametrize(("written", "commands", "options"), COMMAND_CASES)
def test_every_documented_command_and_option_exists(written: str, commands: list[Any], options: list[str]) -> None:
    assert None not in commands, f"`{written}`: no such command"
    for option in options:
        if option == "--help":
            continue
        known = [c for c in commands if option in _options(c)]
        assert known, f"`{written}` has no option {option}"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("edgefleet device show ID --json", [("edgefleet device show", ["--json"])]),
        ("$ edgefleet deploy status NAME --watch   # refreshes", [("edgefleet deploy status", ["--watch"])]),
        ("edgefleet user list|revoke NAME", [("edgefleet user list|revoke", [])]),
        (
            "edgefleet token list ; edgefleet token revoke ID",
            [("edgefleet token list", []), ("edgefleet token revoke", [])],
        ),
        ("ExecStart=/opt/edgefleet/bin/edgefleet-agent run --config X", [("edgefleet-agent run", ["--config"])]),
        ("cat /etc/edgefleet/agent.toml", []),
        ("edgefleet release build, sign", [("edgefleet release build", [])]),
    ],
)
def test_the_command_reader(line: str, expected: list[tuple[str, list[str]]]) -> None:
    found = [(written, options) for written, commands, options in command_uses(line)]
    assert found == expected
    assert all(None not in commands for _, commands, _ in command_uses(line))


def test_the_command_reader_catches_drift() -> None:
    (_, commands, _), *_ = command_uses("edgefleet device frobnicate ID")
    assert None in commands
    (_, commands, options), *_ = command_uses("edgefleet device show ID --wibble")
    assert None not in commands
    assert options == ["--wibble"]
    assert "--wibble" not in _options(commands[0])


# --- the manifest reference ----------------------------------------------------------------


def _models(annotation: Any) -> Iterator[tuple[str, type[BaseModel]]]:
    """(path suffix, model) of each pydantic model in an annotation: `[]` for list items, `.NAME` for dict values."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        yield from _models(args[0])
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _models(arg)
    elif origin in (list, tuple, set, frozenset):
        for arg in args:
            if arg is not Ellipsis:
                yield from (("[]" + suffix, model) for suffix, model in _models(arg))
    elif origin is dict:
        yield from ((".NAME" + suffix, model) for suffix, model in _models(args[1]))
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield "", annotation


def manifest_keys(model: type[BaseModel] = manifest.ComposeFile, prefix: str = "") -> set[str]:
    """Every key path the manifest parser accepts, from its models: `x-edgefleet.services.NAME.probes[].http.port`."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{field.alias or name}"
        keys.add(path)
        for suffix, nested in _models(field.annotation):
            keys |= manifest_keys(nested, f"{path}{suffix}.")
    return keys


def test_the_key_reader_finds_the_manifest() -> None:
    keys = manifest_keys()
    assert {"services", "x-edgefleet", "services.NAME.healthcheck.retries"} <= keys
    assert "x-edgefleet.services.NAME.probes[].http.path" in keys
    assert len(keys) > 40


def test_every_manifest_key_is_in_the_publisher_guide() -> None:
    documented = set(code_spans(PUBLISHER_GUIDE.read_text(encoding="utf-8")))
    missing = sorted(manifest_keys() - documented)
    assert not missing, f"docs/publisher-guide.md lacks a row (a `code span`) for each of: {missing}"


def test_every_refused_key_and_permission_is_in_the_publisher_guide() -> None:
    documented = set(code_spans(PUBLISHER_GUIDE.read_text(encoding="utf-8")))
    missing = sorted(set(manifest.FORBIDDEN_KEYS) - documented)
    assert not missing, f"refused keys not in docs/publisher-guide.md: {missing}"
    kinds = {*manifest.PLAIN_PERMISSIONS, *policy.ARGUMENT_KINDS}
    named = {span.split(":", 1)[0] for span in documented}
    assert not kinds - named, f"permissions not in docs/publisher-guide.md: {sorted(kinds - named)}"


# --- links ----------------------------------------------------------------------------------


def _links(path: Path) -> Iterator[str]:
    text = prose(path.read_text(encoding="utf-8"))
    text = re.sub(r"(`+).+?\1", "", text)  # a link inside a code span is not a link
    yield from (match.group(1) for match in INLINE_LINK.finditer(text))
    yield from (match.group(1) for match in REFERENCE_LINK.finditer(text))


LINK_CASES = [
    pytest.param(doc, target, id=f"{doc.name}: {target}")
    for doc in DOCS
    for target in _links(doc)
    if not re.match(r"^[a-z][a-z0-9+.-]*:", target)
]


def anchors(path: Path) -> set[str]:
    """The heading anchors GitHub makes for a markdown file (lower case, punctuation dropped, spaces to `-`)."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose(path.read_text(encoding="utf-8")), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


@pytest.mark.parametrize(("doc", "target"), LINK_CASES)
def test_every_relative_link_points_to_a_file(doc: Path, target: str) -> None:
    relative, _, anchor = target.partition("#")
    linked = doc.parent / relative if relative else doc
    assert linked.exists(), f"{doc.relative_to(ROOT)} links to {target}, which does not exist"
    if anchor and linked.suffix == ".md":
        assert anchor in anchors(linked), f"{doc.relative_to(ROOT)} links to {target}: no such heading"


def test_the_link_reader() -> None:
    assert LINK_CASES, "no relative links found: is the link reader broken?"
    assert {"update-transactions", "configuration", "known-engine-faults"} <= anchors(ROOT / "docs" / "agent.md")
    assert "deployments-as-code-deploy-apply" in anchors(ROOT / "docs" / "deployments.md")
