"""Every ``edged ...`` command that README.md and docs/*.md show exists and parses.

The commands are taken from the shell blocks (```sh, ```bash, ```shell, ```console, and
``$ ``-prompted lines of any block) and from inline code spans, and parsed with the real
parser of ``edged/cli/`` (parsed, never run). A shell block shows a whole command, so it
must parse as it stands. An inline span counts when it names one of edged's commands
(prose also writes `edged <device_id>`); it may only name it (`edged ask`), so missing
required arguments are filled with a placeholder, but whatever the span does show must
parse. A pasted fragment such as ``edged doctor also bench/guardian.py# ...`` fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from edged.cli import build_parser
from edged.models import load_manifest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = {"sh", "bash", "shell", "console", "zsh"}
_SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;"}
_REDIRECTION = re.compile(r"(?:^|(?<=\s))\d*(?:&>>?|>>?|<)(?:&\d+|\s*[^\s|&;<>]+)")
_WRAPPERS = {"sudo", "nice", "env", "exec", "time", "nohup"}


@dataclass(frozen=True)
class Command:
    """One ``edged`` invocation found in a document."""

    where: str  # file:line
    argv: tuple[str, ...]  # the arguments after ``edged``
    inline: bool  # from an inline code span (may omit required arguments)
    error: str | None = None  # the line is not valid shell


def strip_comment(line: str) -> str:
    """``line`` without its shell comment: a ``#`` that starts a word, outside quotes
    (as bash reads it: ``a.py#b`` is one word)."""
    quote: str | None = None
    prev = " "
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 2
                prev = "x"
                continue
            if ch == quote:
                quote = None
        elif ch == "\\":
            i += 2
            prev = "x"
            continue
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (prev.isspace() or prev in ";|&()"):
            return line[:i]
        prev = ch
        i += 1
    return line


def shell_lines(
    block: list[tuple[int, str]], *, prompted_only: bool = False
) -> list[tuple[int, str]]:
    """The command lines of a block, continuation lines (``\\`` at the end) joined: the
    ``$ ``-prompted ones if it has any (the rest is output) or ``prompted_only``, else
    every line."""
    prompted = prompted_only or any(t.startswith("$ ") for _, t in block)
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in block:
        n, text = number, raw
        if pending is not None:
            n, text = pending[0], pending[1] + " " + raw.lstrip()
            pending = None
        elif prompted:
            if not raw.startswith("$ "):
                continue  # output
            text = raw[2:]
        if text.rstrip().endswith("\\"):
            pending = (n, text.rstrip()[:-1])
            continue
        out.append((n, text))
    if pending is not None:
        out.append(pending)
    return out


def edged_invocations(line: str) -> list[list[str]]:
    """Every ``edged`` command in one shell line, as its argument list (after ``edged``)."""
    # redirections (2>&1, > out, < in) are not arguments
    line = _REDIRECTION.sub(" ", strip_comment(line))
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    tokens = list(lexer)
    segments: list[list[str]] = [[]]
    for tok in tokens:
        if tok in _SEPARATORS:
            segments.append([])
        else:
            segments[-1].append(tok)
    found = []
    for seg in segments:
        words = list(seg)
        # leading VAR=value assignments and wrappers (sudo, nice, env, ...) and their flags
        while words and (
            re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0])
            or words[0] in _WRAPPERS
            or (words[0].startswith("-") and len(words) > 1)
        ):
            words.pop(0)
        if words and (words[0] == "edged" or words[0].endswith("/edged")):
            found.append(words[1:])
    return found


def fenced_blocks(text: str) -> list[tuple[str, list[tuple[int, str]]]]:
    """(info string, [(line number, text)]) for every fenced code block."""
    blocks: list[tuple[str, list[tuple[int, str]]]] = []
    current: list[tuple[int, str]] | None = None
    info = ""
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            if current is None:
                info, current = stripped[3:].strip().lower(), []
            else:
                blocks.append((info, current))
                current = None
        elif current is not None:
            current.append((n, line))
    return blocks


def inline_spans(text: str) -> list[tuple[int, str]]:
    """(line number, code) of the inline code spans outside fenced blocks."""
    out: list[tuple[int, str]] = []
    in_block = False
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            continue
        out.extend((n, m.group(1)) for m in re.finditer(r"`([^`]+)`", line))
    return out


COMMANDS = {
    name
    for action in build_parser()._actions
    if isinstance(action, argparse._SubParsersAction)
    for name in action.choices
}


def commands_in(path: Path) -> list[Command]:
    """The ``edged`` commands a Markdown file shows."""
    text = path.read_text()
    rel = path.relative_to(ROOT)
    cmds: list[Command] = []
    for info, block in fenced_blocks(text):
        if info in SHELL_FENCES:
            lines = shell_lines(block)
        else:  # a json/text/toml block: only $-prompted lines are commands
            lines = shell_lines(block, prompted_only=True)
        for n, line in lines:
            try:
                invocations = edged_invocations(line)
            except ValueError as e:  # an unbalanced quote: bash would refuse it too
                cmds.append(Command(f"{rel}:{n}", (line,), inline=False, error=f"not shell: {e}"))
                continue
            for argv in invocations:
                cmds.append(Command(f"{rel}:{n}", tuple(argv), inline=False))
    for n, code in inline_spans(text):
        # a span that names a command starts with it (`edged status`, `.venv/bin/edged
        # ask`); `edged <device_id>` names a device, and `edged ask: <why>` quotes a
        # message edged prints
        if not re.match(r"^(sudo\s+)?(\S*/)?edged\s+[a-z]", code) or re.match(
            r"^\S*edged \S+:(\s|$)", code
        ):
            continue
        try:
            invocations = edged_invocations(code)
        except ValueError:  # not shell (an unbalanced quote in prose code)
            continue
        for argv in invocations:
            # prose also names things "edged ..." (`edged project`, the manufacturer in
            # Home Assistant): a span is a command when it names one of edged's commands
            if argv and argv[0] in COMMANDS:
                cmds.append(Command(f"{rel}:{n}", tuple(argv), inline=True))
    return cmds


def parse_error(argv: list[str]) -> str | None:
    """argparse's complaint about ``edged <argv>``, or None when it parses."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as e:
        return None if e.code == 0 else err.getvalue().strip().splitlines()[-1]
    return None


MODEL_NAMES = {m.name for m in load_manifest(ROOT / "models" / "manifest.toml").model}
#: a placeholder the reader replaces: NAME, [NAME], NAME...
_PLACEHOLDER = re.compile(r"^\[?[A-Z][A-Z_]*\]?(\.\.\.)?$")


def problem(cmd: Command) -> str | None:
    """Why ``cmd`` does not parse, or None. An inline span may leave out required
    arguments (positionals): they are filled with a placeholder.

    ``edged models`` takes any words as model names, so argparse alone would let a pasted
    fragment through: names must be in models/manifest.toml or be placeholders, and
    ``list`` takes none (it would ignore them).
    """
    if cmd.error is not None:
        return cmd.error
    argv = list(cmd.argv)
    why = parse_error(argv)
    for _ in range(3):
        if why is None or not cmd.inline or "arguments are required" not in why:
            break
        argv.append("PLACEHOLDER")
        why = parse_error(argv)
    if why is not None:
        return why
    args = build_parser().parse_args(argv)
    if args.command == "models":
        names = [n for n in args.names if n != "PLACEHOLDER"]
        if args.action == "list" and names:
            return f"models list takes no names (it would ignore {names})"
        unknown = [n for n in names if n not in MODEL_NAMES and not _PLACEHOLDER.match(n)]
        if unknown:
            return f"not model names in models/manifest.toml: {unknown}"
    return None


ALL = [c for doc in DOCS for c in commands_in(doc)]


def test_the_documents_show_commands() -> None:
    # the extraction must find what is there, or the test below would pass on nothing
    readme = [c for c in ALL if c.where.startswith("README.md") and not c.inline]
    shown = {c.argv[0] for c in readme if c.argv}
    assert {"ask", "doctor", "status", "bench", "models"} <= shown, shown
    assert len(ALL) >= 25, len(ALL)


@pytest.mark.parametrize("cmd", ALL, ids=[f"{c.where} edged {' '.join(c.argv)}" for c in ALL])
def test_every_edged_command_shown_parses(cmd: Command) -> None:
    assert problem(cmd) is None, f"{cmd.where}: edged {' '.join(cmd.argv)}: {problem(cmd)}"


@pytest.mark.parametrize(
    "line",
    [
        # the fragment README once carried
        "edged doctor also bench/guardian.py, bench/router.py, bench/energy.py# board profile",
        "edged models list also bench/guardian.py, bench/router.py# what is present",
        "edged ask --temprature 0 'Hi'",  # a misspelt flag
        "edged ask --route Sky! 'Hi'",  # a value the flag does not take
        "edged stats --device kitchen-1",  # no such command
        "sudo EDGED_MQTT__PORT=1884 .venv/bin/edged bench --runs many",
        "make run && .venv/bin/edged models list --wheel",
        "edged models fetch smollm2-135m-instruct bench/router.py",
    ],
)
def test_a_broken_command_is_caught(line: str) -> None:
    (argv,) = edged_invocations(line)
    assert problem(Command("x", tuple(argv), inline=False)) is not None


def test_the_extraction_reads_shell_as_bash_does() -> None:
    assert edged_invocations("edged doctor   # board profile, sensors") == [["doctor"]]
    assert edged_invocations("edged ask 'a # not a comment' --json") == [
        ["ask", "a # not a comment", "--json"]
    ]
    assert edged_invocations("a.py#b edged") == []  # a '#' inside a word is not a comment
    assert edged_invocations(
        "sudo EDGED_X=1 /opt/edged/.venv/bin/edged check-config /etc/e.toml 2>&1 | head"
    ) == [["check-config", "/etc/e.toml"]]
    assert edged_invocations("edged guard check < texts.jsonl > out.jsonl") == [["guard", "check"]]
    assert edged_invocations("mosquitto_sub -t 'edged/#' -v &") == []
    block = [(1, "$ edged status \\"), (2, "  --device k1"), (3, "device  k1")]
    assert shell_lines(block) == [(1, "edged status  --device k1")]
