"""Compiled rules for one direction: find complete matches, and, on a stream, where a match
that has only begun could start.

Phrase rules match whole words on the skeleton view: the words that begin a phrase are
found with one set intersection, then one dictionary lookup per phrase length, and spans are
worked out only for the words that match. PII detectors run one by one on the plain view
(:mod:`edged.guardian.pii_scan`: each candidate confirmed by its checksum; each detector
skipped on a text without its trigger, and tried only where a value can be). Regex rules run
on the plain view too. For streams, ``regex`` partial matching and phrase-prefix tables give
the hold point. ``Matcher(..., fast=False)`` does all of it the careful way, for tests.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import regex

from edged.guardian import normalize as nz
from edged.guardian.pii_scan import PiiScanner, may_grow
from edged.guardian.rules import Action, Direction, Rule


def _only_invisible(text: str, end: int) -> bool:
    return end >= len(text) or nz.INVISIBLE_RE.fullmatch(text, end) is not None


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

    def __init__(self, rules: Sequence[Rule], direction: Direction, *, fast: bool = True) -> None:
        """``fast=False`` turns every shortcut off (word spans for every text, each detector
        on the whole text, on a stream too): the reference the fast paths are tested against."""
        self.rules = [r for r in rules if r.applies(direction) and r.kind != "semantic"]
        self._fast = fast
        # phrases: first word -> word count -> word tuple -> [(order added, rule)]
        self._first: dict[str, dict[int, dict[tuple[str, ...], list[tuple[int, Rule]]]]] = {}
        self._added = 0
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
        self._pii = PiiScanner(self._pii_rules, fast=fast)

    def _add_phrase(self, words: tuple[str, ...], rule: Rule) -> None:
        if not words:
            return
        table = self._first.setdefault(words[0], {}).setdefault(len(words), {})
        table.setdefault(words, []).append((self._added, rule))
        self._added += 1
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
        if self._pii.detectors or self._regex_rules:
            view = nz.plain(text)
            if self._pii.detectors:
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

    @staticmethod
    def _at(
        texts: list[str], i: int, by_len: dict[int, dict[tuple[str, ...], list[tuple[int, Rule]]]]
    ) -> list[tuple[int, int, Rule]]:
        """Phrases that start at word ``i``: (order added, word count, rule), in the order
        the rules were added (one dictionary lookup per phrase length, not per phrase)."""
        hits: list[tuple[int, int, Rule]] = []
        for k, table in by_len.items():
            rules = table.get(tuple(texts[i : i + k]))
            if rules:
                hits.extend((added, k, rule) for added, rule in rules)
        if len(hits) > 1:
            hits.sort(key=lambda h: h[0])
        return hits

    def _scan_phrases(self, text: str, stream: bool, out: list[Finding]) -> int:
        view = nz.skeleton(text)
        if self._fast:
            if stream:
                return self._scan_phrases_stream(text, view, out)
            self._scan_phrases_fast(view, out)
            return len(text)
        ws = nz.words(view)
        texts = [w.text for w in ws]
        n = len(ws)
        end_open = (
            stream
            and n > 0
            and (
                _only_invisible(text, ws[-1].end) or (ws[-1].spaced and may_grow(text, ws[-1].end))
            )
        )
        first = self._first
        for i, w in enumerate(texts):
            by_len = first.get(w)
            if by_len is None:
                continue
            for _added, k, rule in self._at(texts, i, by_len):
                last = ws[i + k - 1]
                final = not (end_open and i + k == n)
                out.append(Finding(rule.id, rule.action, ws[i].start, last.end, rule.id, final))
        if not stream or n == 0:
            return len(text)
        hold = self._phrase_begins(texts, end_open, lambda j: ws[j].start, len(text))
        # Spaced-out letters at the end (s e c r ...) may still join into any word: hold
        # them until a real word or punctuation shows where the run ends.
        k = n
        while k > 0 and ws[k - 1].spaced:
            k -= 1
        if end_open and k < n:
            hold = min(hold, ws[k].start)
        return hold

    def _scan_phrases_stream(self, text: str, view: nz.View, out: list[Finding]) -> int:
        """What the careful stream path above does, with words located only where needed:
        the last ones, the ones that begin a phrase."""
        split = nz.word_texts(view)
        texts = nz.merged_word_texts(view, split)
        n = len(texts)
        if n == 0:
            return len(text)
        spans = nz.WordSpans(view, split, merged=texts is not split)

        def spaced(i: int) -> bool:
            return len(texts[i]) == 1 or spans.joined(i)

        last_end = spans.span(n - 1, n - 1)[1]
        end_open = _only_invisible(text, last_end) or (spaced(n - 1) and may_grow(text, last_end))
        first = self._first
        for i in self._starts(texts):
            for _added, k, rule in self._at(texts, i, first[texts[i]]):
                final = not (end_open and i + k == n)
                out.append(Finding(rule.id, rule.action, *spans.span(i, i + k - 1), rule.id, final))
        hold = self._phrase_begins(texts, end_open, lambda j: spans.span(j, j)[0], len(text))
        # Spaced-out letters at the end (s e c r ...) may still join into any word
        k = n
        while k > 0 and spaced(k - 1):
            k -= 1
        if end_open and k < n:
            hold = min(hold, spans.span(k, k)[0])
        return hold

    def _phrase_begins(
        self, texts: list[str], end_open: bool, start: Callable[[int], int], none: int
    ) -> int:
        """Where the last words may be the beginning of a phrase (the earliest such word's
        ``start``), else ``none``. ``end_open``: the last word may still grow."""
        n = len(texts)
        for j in range(max(0, n - self._max_words), n):
            if end_open:
                last_ok = (
                    texts[-1] in self._first_prefixes
                    if j == n - 1
                    else texts[-1] in self._word_prefixes.get(tuple(texts[j : n - 1]), ())
                )
                if last_ok:
                    return start(j)
            elif tuple(texts[j:n]) in self._tuple_prefixes:
                return start(j)
        return none

    def _starts(self, texts: list[str]) -> list[int]:
        """Where in ``texts`` a phrase's first word stands, in order (a set intersection
        and ``list.index``, in C)."""
        starts = self._first_keys.intersection(texts)
        positions: list[int] = []
        for w in starts:
            i = -1
            try:
                while True:
                    i = texts.index(w, i + 1)
                    positions.append(i)
            except ValueError:
                pass
        positions.sort()
        return positions

    def _scan_phrases_fast(self, view: nz.View, out: list[Finding]) -> None:
        """A whole text: words without spans (``str.split``, spaced-out runs joined by one
        regex), the words that begin a phrase found by a set intersection and
        ``list.index`` (in C), spans only for the rare phrase that matches."""
        split = nz.word_texts(view)
        texts = nz.merged_word_texts(view, split)
        positions = self._starts(texts)
        if not positions:
            return
        spans: nz.WordSpans | None = None
        first = self._first
        for i in positions:
            for _added, k, rule in self._at(texts, i, first[texts[i]]):
                if spans is None:
                    spans = nz.WordSpans(view, split, merged=texts is not split)
                out.append(Finding(rule.id, rule.action, *spans.span(i, i + k - 1), rule.id))

    def _scan_pii(self, view: nz.View, stream: bool, out: list[Finding]) -> int:
        """The PII detectors' values (:meth:`PiiScanner.scan`), one finding per rule that
        uses the detector; returns the hold point."""
        hits, hold = self._pii.scan(view, stream)
        for label, s, e, final in hits:
            for rule in self._pii_rules[label]:
                out.append(Finding(rule.id, rule.action, s, e, label, final))
        return hold

    @staticmethod
    def _scan_regex(
        view: nz.View, compiled: Any, rule: Rule, stream: bool, out: list[Finding]
    ) -> int:
        hold = view.original_length
        for m in compiled.finditer(view.text, partial=stream):
            if m.start() == m.end():
                continue
            s, e = view.span(m.start(), m.end())
            if m.partial:
                hold = min(hold, s)
                continue
            at_end = stream and may_grow(view.text, m.end())
            out.append(Finding(rule.id, rule.action, s, e, rule.id, not at_end))
            if at_end:
                hold = min(hold, s)
        return hold
