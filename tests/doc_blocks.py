"""The fenced blocks of README.md and of every docs/*.md page, keyed by file and heading.

A command block is keyed ``"FILE: HEADING #N"``: FILE relative to the repository root (``README.md``,
``docs/scale.md``), HEADING the heading it sits under (without its ``#`` marks), N its position among
that heading's command blocks, from 1 (``"docs/scale.md: Sharded indexes and resumable builds #1"``).
``tests/test_readme.py`` holds the rule (every command block is run or listed); a test that runs a
block itself reads it with :func:`block` and names its key literally, so that moving the block to
another page or heading fails loudly instead of testing stale text.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
COMMAND_LANGUAGES = frozenset({"bash", "sh", "console", "python"})
INERT_LANGUAGES = frozenset({"text"})


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page."""

    file: str  # relative to the repository root, with forward slashes
    heading: str
    ordinal: int  # among the command blocks under the same heading, from 1; 0 for other blocks
    language: str
    text: str
    line: int

    @property
    def key(self) -> str:
        return f"{self.file}: {self.heading} #{self.ordinal}"


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    line: int


def parse_blocks(text: str, file: str = "README.md") -> list[Block]:
    """Every fenced block (```lang ... ```) with the heading it sits under; command blocks are numbered."""
    blocks: list[Block] = []
    heading, ordinals = "", {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("```"):
            language = line[3:].strip()
            body: list[str] = []
            start = i + 1
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            ordinal = 0
            if language in COMMAND_LANGUAGES:
                ordinal = ordinals[heading] = ordinals.get(heading, 0) + 1
            blocks.append(Block(file, heading, ordinal, language, "\n".join(body) + "\n", start))
        i += 1
    return blocks


def headings(text: str) -> list[Heading]:
    """The Markdown headings outside fenced blocks."""
    found: list[Heading] = []
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"(#+) (.*)", line)):
            found.append(Heading(len(match[1]), match[2].strip(), number))
    return found


def pages() -> list[Path]:
    """README.md and every docs/*.md page."""
    return [README, *sorted(DOCS.glob("*.md"))]


def relative(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def all_blocks() -> list[Block]:
    return [b for page in pages() for b in parse_blocks(page.read_text(encoding="utf-8"), relative(page))]


def command_blocks() -> dict[str, Block]:
    return {b.key: b for b in all_blocks() if b.language in COMMAND_LANGUAGES}


def block(key: str) -> Block:
    """The command block ``"FILE: HEADING #N"``."""
    blocks = command_blocks()
    assert key in blocks, f"no command block {key!r} in README.md or docs/ (moved or renamed?)"
    return blocks[key]


def shell_commands(text: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped, ``&&`` split."""
    joined = text.replace("\\\n", "")
    commands: list[list[str]] = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in words:
            if word == "&&":
                commands.append(current)
                current = []
            else:
                current.append(word)
        if current:
            commands.append(current)
    return commands
