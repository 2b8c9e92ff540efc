"""Compiled rules for one direction: find complete matches, and, on a stream, where a match
that has only begun could start.

Phrase rules match whole words on the skeleton view (a first-word index makes 1,000 phrases
cost a dictionary lookup per word). PII detectors are one alternation on the plain view,
each candidate confirmed by its checksum. Regex rules run on the plain view too. For
streams, ``regex`` partial matching and phrase-prefix tables give the hold point.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import regex

from edged.guardian import normalize as nz
from edged.guardian.pii import BY_NAME, DETECTORS
from edged.guardian.rules import Action, Direction, Rule


def _may_grow(text: str, end: int) -> bool:
    """On a stream, could a match ending at ``end`` still grow when more text comes?

    Yes while fewer than four visible characters follow it: "4111 1111 1111 " may go on with
    "1111", "192.168.1.1." with "0", "example.com.e" with "tty".
    """
    rest = [c for c in text[end:] if not nz.is_invisible(c)]
    return len(rest) <= 3


def _only_invisible(text: str, end: int) -> bool:
    return all(nz.is_invisible(c) for c in text[end:])


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule that matched ``text[start:end]`` (original coordinates).

    ``final`` is False on a stream when the match touches the end of what has arrived, so
    it may still grow (``secret`` -> ``secretary``; one more digit of a card number).
    """

    rule_id: str
    action: Action
    start: int
    end: int
    label: str
    final: bool = True


class Matcher:
    """The phrase, regex and PII rules of one direction, compiled."""

    def __init__(self, rules: Sequence[Rule], direction: Direction) -> None:
        self.rules = [r for r in rules if r.applies(direction) and r.kind != "semantic"]
        # phrases: first word -> [(word tuple, rule)]
        self._first: dict[str, list[tuple[tuple[str, ...], Rule]]] = defaultdict(list)
        self._max_words = 0
        self._first_keys: set[str] = set()
        self._first_prefixes: set[str] = set()
        self._word_prefixes: dict[tuple[str, ...], set[str]] = defaultdict(set)
        self._tuple_prefixes: set[tuple[str, ...]] = set()
        # PII: detector name -> rules using it
        self._pii_rules: dict[str, list[Rule]] = defaultdict(list)
        self._regex_rules: list[tuple[Any, Rule]] = []
        for r in self.rules:
            if r.kind == "phrase":
                assert r.phrases is not None
                for phrase in r.phrases:
                    words = nz.phrase_words(phrase)
                    self._add_phrase(words, r)
                    if len(words) > 1:  # "l a u n c h c o d e" joins into one word
                        self._add_phrase(("".join(words),), r)
            elif r.kind == "pii":
                assert r.detectors is not None
                for d in r.detectors:
                    self._pii_rules[d].append(r)
            elif r.kind == "regex":
                assert r.pattern is not None
                self._regex_rules.append((regex.compile(r.pattern), r))
        self._pii_compiled = [
            (
                d.name,
                regex.compile(d.pattern),
                re.compile(d.trigger) if d.trigger else None,
                d.needs_digit,
            )
            for d in DETECTORS
            if d.name in self._pii_rules
        ]

    def _add_phrase(self, words: tuple[str, ...], rule: Rule) -> None:
        if not words:
            return
        self._first[words[0]].append((words, rule))
        self._max_words = max(self._max_words, len(words))
        self._first_keys.add(words[0])
        for k in range(len(words)):
            w = words[k]
            prefixes = {w[:i] for i in range(1, len(w) + 1)}
            if k == 0:
                self._first_prefixes |= prefixes
            else:
                self._word_prefixes[words[:k]] |= prefixes
            if k + 1 < len(words):
                self._tuple_prefixes.add(words[: k + 1])

    @property
    def empty(self) -> bool:
        """True when no rule of this direction is compiled here."""
        return not self.rules

    # --- scanning ---------------------------------------------------------------------------

    def scan(self, text: str, stream: bool = False) -> tuple[list[Finding], int]:
        """Complete matches in ``text``; with ``stream``, also the hold point.

        The hold point is the smallest index from which ``text`` may be the beginning of a
        match that more text could complete (``len(text)`` when nothing is pending).
        """
        findings: list[Finding] = []
        hold = len(text)
        if self._first:
            hold = min(hold, self._scan_phrases(text, stream, findings))
        if self._pii_compiled or self._regex_rules:
            view = nz.plain(text)
            if self._pii_compiled:
                hold = min(hold, self._scan_pii(view, stream, findings))
            for compiled, rule in self._regex_rules:
                hold = min(hold, self._scan_regex(view, compiled, rule, stream, findings))
        if stream:
            # never cut a complete match in two: hold it whole, or release it whole
            changed = True
            while changed:
                changed = False
                for f in findings:
                    if f.start < hold < f.end:
                        hold = f.start
                        changed = True
        return findings, hold

    def _scan_phrases(self, text: str, stream: bool, out: list[Finding]) -> int:
        view = nz.skeleton(text)
        if not stream and not nz.has_spaced_run(view.text):
            self._scan_phrases_fast(view, out)
            return len(text)
        ws = nz.words(view)
        texts = [w.text for w in ws]
        n = len(ws)
        end_open = (
            stream
            and n > 0
            and (
                _only_invisible(text, ws[-1].end) or (ws[-1].spaced and _may_grow(text, ws[-1].end))
            )
        )
        for i, w in enumerate(texts):
            for words, rule in self._first.get(w, ()):
                k = len(words)
                if tuple(texts[i : i + k]) == words:
                    last = ws[i + k - 1]
                    final = not (end_open and i + k == n)
                    out.append(Finding(rule.id, rule.action, ws[i].start, last.end,
                                       rule.id, final))  # fmt: skip
        if not stream or n == 0:
            return len(text)
        # Could the last words be the beginning of a phrase? (The earliest start wins.)
        hold = len(text)
        for j in range(max(0, n - self._max_words), n):
            head = tuple(texts[j : n - 1])
            if end_open:
                last_ok = (
                    texts[-1] in self._first_prefixes
                    if j == n - 1
                    else texts[-1] in self._word_prefixes.get(head, ())
                )
                if last_ok:
                    hold = ws[j].start
                    break
            elif tuple(texts[j:n]) in self._tuple_prefixes:
                hold = ws[j].start
                break
        # Spaced-out letters at the end (s e c r ...) may still join into any word: hold
        # them until a real word or punctuation shows where the run ends.
        k = n
        while k > 0 and ws[k - 1].spaced:
            k -= 1
        if end_open and k < n:
            hold = min(hold, ws[k].start)
        return hold

    def _scan_phrases_fast(self, view: nz.View, out: list[Finding]) -> None:
        """Whole texts without spaced-out letters: words without spans (in C), spans only
        for the rare phrase that matches."""
        texts = nz.word_texts(view)
        if self._first_keys.isdisjoint(texts):
            return
        spans: list[tuple[int, int]] | None = None
        first = self._first
        for i, w in enumerate(texts):
            cands = first.get(w)
            if not cands:
                continue
            for words, rule in cands:
                k = len(words)
                if tuple(texts[i : i + k]) == words:
                    if spans is None:
                        spans = nz.word_spans(view)
                    out.append(Finding(rule.id, rule.action, spans[i][0], spans[i + k - 1][1],
                                       rule.id))  # fmt: skip

    def _scan_pii(self, view: nz.View, stream: bool, out: list[Finding]) -> int:
        """Each detector on its own (one big alternation is ~10x slower in ``regex``), then
        overlaps resolved by detector order: the earlier detector keeps a contested span."""
        hold = view.original_length
        text = view.text
        found: list[tuple[int, int, int, str, bool]] = []  # start, end, priority, name, grows
        has_digit = any(d in text for d in "0123456789")
        for prio, (name, compiled, trigger, needs_digit) in enumerate(self._pii_compiled):
            if needs_digit and not has_digit and not stream:
                continue  # (on a stream a value may begin with "(" or "+", before any digit)
            if trigger is not None and not stream and trigger.search(text) is None:
                continue
            validate = BY_NAME[name].validate
            for m in compiled.finditer(text, partial=stream):
                if m.start() == m.end():
                    continue
                if m.partial:
                    hold = min(hold, view.span(m.start(), m.end())[0])
                    continue
                grows = stream and _may_grow(text, m.end())
                if validate is not None and not validate(m.group()):
                    if grows:  # one more digit may make it valid
                        hold = min(hold, view.span(m.start(), m.end())[0])
                    continue
                found.append((m.start(), m.end(), prio, name, grows))
        found.sort(key=lambda f: (f[0], f[2]))
        taken_end = -1
        for start, end, _prio, label, grows in found:
            if start < taken_end:
                continue  # inside a value an earlier detector already claimed
            taken_end = end
            s, e = view.span(start, end)
            for rule in self._pii_rules[label]:
                out.append(Finding(rule.id, rule.action, s, e, label, not grows))
            if grows:
                hold = min(hold, s)
        return hold

    @staticmethod
    def _scan_regex(view: nz.View, compiled: Any, rule: Rule, stream: bool,
                    out: list[Finding]) -> int:  # fmt: skip
        hold = view.original_length
        for m in compiled.finditer(view.text, partial=stream):
            if m.start() == m.end():
                continue
            s, e = view.span(m.start(), m.end())
            if m.partial:
                hold = min(hold, s)
                continue
            at_end = stream and _may_grow(view.text, m.end())
            out.append(Finding(rule.id, rule.action, s, e, rule.id, not at_end))
            if at_end:
                hold = min(hold, s)
        return hold
