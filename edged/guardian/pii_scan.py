"""The PII detectors of one direction, compiled, and run on a plain view.

Each detector runs on its own, each candidate confirmed by its checksum; each is skipped on
a text without its trigger, and tried only where a value can be (around its anchor, inside
its region). On a stream, ``regex`` partial matching gives where a value that has only begun
starts. ``PiiScanner(..., fast=False)`` runs every detector on the whole text, on a stream
too: the reference the shortcuts are tested against. :class:`~edged.guardian.matcher.Matcher`
turns what is found into findings for the rules that use each detector.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, NamedTuple

import regex

from edged.guardian import normalize as nz
from edged.guardian.pii import DETECTORS, Detector
from edged.guardian.pii import shape as pii_shape


def may_grow(text: str, end: int) -> bool:
    """On a stream, could a match ending at ``end`` still grow when more text comes?

    Yes while fewer than four visible characters follow it: "4111 1111 1111 " may go on with
    "1111", "192.168.1.1." with "0", "example.com.e" with "tty".
    """
    if len(text) - end <= 3:
        return True
    return len(nz.INVISIBLE_RE.sub("", text[end:])) <= 3


_DIGIT_RE = re.compile(r"[0-9]")
_LITERAL_RE = re.compile(r"[A-Za-z0-9@ _-]+")  # a pattern that is only itself


def _anchored(det: _Compiled, text: str) -> Iterator[Any]:
    """What ``det.pattern.finditer(text)`` gives, trying the pattern only where a value can
    start: from the run of ``lead`` characters before each anchor up to the anchor (the
    leftmost place that matches, then on from the end of that match, as ``finditer``)."""
    assert det.anchor is not None
    anchor, lead, match = det.anchor, det.lead, det.pattern.match
    done = 0  # where the last match ended
    a = text.find(anchor)
    while a != -1:
        p = a
        while p > done and text[p - 1] in lead:
            p -= 1
        for start in range(p, a + 1):
            m = match(text, start)
            if m is not None and m.end() > start:
                yield m
                done = m.end()
                break
        a = text.find(anchor, max(a + 1, done))


def _in_regions(det: _Compiled, text: str, shaped: str) -> Iterator[Any]:
    """What ``det.pattern.finditer(text)`` gives, running the pattern only over the regions
    its values must lie in (``shaped`` is the text's shape), each with ``before`` characters
    ahead and ``after`` past it."""
    assert det.region is not None
    finditer = det.pattern.finditer
    done = 0  # where the last match ended
    for region in det.region.finditer(shaped):
        start, end = region.span()
        for m in finditer(text, max(start - det.before, done), end + det.after):
            if m.start() >= end:
                break  # (a value starting here belongs to the next region)
            yield m
            done = m.end()


class _Compiled(NamedTuple):
    """One PII detector, compiled (see :class:`edged.guardian.pii.Detector`)."""

    name: str
    pattern: Any  # regex.Pattern[str]
    trigger: re.Pattern[str] | None
    shape_trigger: re.Pattern[str] | None
    #: matches the run of the detector's characters at the start of the reversed text
    tail: re.Pattern[str] | None
    needs_digit: bool
    #: the trigger when it is a plain string (``in`` is cheaper than a search)
    literal: str | None
    validate: Callable[[str], bool] | None
    #: proper prefixes of the detector's heads (``str.endswith`` takes a tuple)
    head_prefixes: tuple[str, ...] | None
    anchor: str | None
    lead: frozenset[str]
    region: re.Pattern[str] | None
    before: int
    after: int
    first: re.Pattern[str] | None
    #: the ASCII characters of ``tail``'s class
    tail_chars: frozenset[str]


def _compile(d: Detector) -> _Compiled:
    return _Compiled(
        d.name,
        regex.compile(d.pattern),
        re.compile(d.trigger) if d.trigger else None,
        re.compile(d.shape_trigger) if d.shape_trigger else None,
        re.compile(f"{d.charset}*") if d.charset and d.trigger else None,
        d.needs_digit,
        d.trigger if d.trigger and _LITERAL_RE.fullmatch(d.trigger) else None,
        d.validate,
        tuple({h[:i] for h in d.heads for i in range(1, len(h))}) if d.heads else None,
        d.anchor,
        frozenset(c for c in map(chr, range(128)) if d.lead and re.fullmatch(d.lead, c)),
        re.compile(d.region) if d.region else None,
        d.before,
        d.after,
        re.compile(d.first) if d.first else None,
        frozenset(c for c in map(chr, range(128)) if d.charset and re.fullmatch(d.charset, c)),
    )


class Hit(NamedTuple):
    """A detector's value at ``view``'s original ``[start, end)``; ``final`` is False on a
    stream when it may still grow."""

    label: str
    start: int
    end: int
    final: bool


class PiiScanner:
    """The detectors named in ``names``, compiled, in :data:`~edged.guardian.pii.DETECTORS`
    order (an earlier detector keeps a contested span)."""

    def __init__(self, names: Collection[str], *, fast: bool = True) -> None:
        self.fast = fast
        self.detectors = [_compile(d) for d in DETECTORS if d.name in names]
        self.any_shape = any(c.shape_trigger for c in self.detectors)

    def scan(self, view: nz.View, stream: bool) -> tuple[list[Hit], int]:
        """Values found in ``view`` (original coordinates, in text order), and the hold
        point (``view.original_length`` when nothing is pending).

        Each detector on its own (one big alternation is ~10x slower in ``regex``), then
        overlaps resolved by detector order: the earlier detector keeps a contested span.

        A detector is skipped on a text without its trigger (or without a digit, where every
        value has one); on a stream without the trigger only a value that has just begun can
        be there, so it runs only on the run of the detector's characters that ends the text.
        Triggers with a ``shape_trigger``, and regions, read the text's
        :func:`~edged.guardian.pii.shape` (the plain view turns every decimal digit to ASCII,
        so its ``\\d`` is ``[0-9]``, which the shape turns to ``0``).
        """
        hold = view.original_length
        text = view.text
        fast = self.fast
        found: list[tuple[int, int, int, str, bool]] = []  # start, end, priority, name, grows
        if len(text) < 200:  # (a short text, as on a stream: one search)
            has_digit = _DIGIT_RE.search(text) is not None
        else:  # (a long one: ten string searches in C beat testing every character)
            has_digit = any(d in text for d in "0123456789")
        shaped: str | None = None
        if fast and self.any_shape and has_digit:
            shaped = pii_shape(text)  # (a plain view's decimal digits are all ASCII)
        reversed_text = text[::-1] if fast and stream else ""
        n = len(text)
        last = text[-1:]
        for prio, det in enumerate(self.detectors):
            pos = 0
            if fast:
                if det.needs_digit and not has_digit and not stream:
                    continue  # (on a stream a value may begin with "(" or "+", before any digit)
                if det.literal is not None:
                    triggered = det.literal in text
                elif det.shape_trigger is not None and shaped is not None:
                    triggered = det.shape_trigger.search(shaped) is not None
                elif det.needs_digit and not has_digit:
                    triggered = False  # the trigger has a digit too
                else:
                    triggered = det.trigger is None or det.trigger.search(text) is not None
                if not triggered:
                    if not stream or det.tail is None:
                        continue
                    if last.isascii() and last not in det.tail_chars:
                        continue  # the run of its characters that ends the text is empty
                    if det.head_prefixes is not None and not text.endswith(det.head_prefixes):
                        continue
                    run = det.tail.match(reversed_text)
                    pos = n - (run.end() if run else 0)
                    if pos == n:
                        continue
                    if det.first is not None:  # where a value can start in that run
                        begin = det.first.search(text, pos)
                        if begin is None:
                            continue
                        pos = begin.start()
            validate = det.validate
            matches: Iterable[Any]
            if fast and not stream and det.anchor is not None:
                matches = _anchored(det, text)
            elif fast and not stream and det.region is not None and shaped is not None:
                matches = _in_regions(det, text, shaped)
            else:
                matches = det.pattern.finditer(text, pos, partial=stream)
            for m in matches:
                if m.start() == m.end():
                    continue
                if m.partial:
                    hold = min(hold, view.span(m.start(), m.end())[0])
                    continue
                grows = stream and may_grow(text, m.end())
                if validate is not None and not validate(m.group()):
                    if grows:  # one more digit may make it valid
                        hold = min(hold, view.span(m.start(), m.end())[0])
                    continue
                found.append((m.start(), m.end(), prio, det.name, grows))
        found.sort(key=lambda f: (f[0], f[2]))
        hits: list[Hit] = []
        taken_end = -1
        for start, end, _prio, label, grows in found:
            if start < taken_end:
                continue  # inside a value an earlier detector already claimed
            taken_end = end
            s, e = view.span(start, end)
            hits.append(Hit(label, s, e, not grows))
            if grows:
                hold = min(hold, s)
        return hits, hold
