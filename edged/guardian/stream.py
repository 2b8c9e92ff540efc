"""The hold-back filter for streamed output.

Text is released only up to the point where nothing forbidden could be starting: the
matcher says where the earliest possible match in progress begins, and everything from
there on is held until more text shows it harmless (or completes the match). Redactions are
applied before release; a ``block`` stops the stream. So no forbidden phrase and no PII
value reaches the wire, not even its first half, wherever token boundaries fall.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edged.guardian.matcher import Finding, Matcher

#: Released text kept as left context. Anything that could begin a match is held, never
#: released, so the context only has to show the boundary before the held text (word
#: boundaries, look-behinds); a little more is kept for patterns with wider look-behinds.
CONTEXT_CHARS = 16


@dataclass(slots=True)
class Step:
    """What one :meth:`StreamFilter.feed` decided."""

    release: str
    applied: list[Finding] = field(default_factory=list)
    blocked_by: list[str] = field(default_factory=list)


def redact(text: str, findings: list[Finding], offset: int = 0) -> str:
    """Replace each redact finding's span (minus ``offset``) with ``[REDACTED:<label>]``."""
    spans = sorted(
        (f.start - offset, f.end - offset, f.label) for f in findings if f.action == "redact"
    )
    out: list[str] = []
    pos = 0
    for start, e, label in spans:
        s = max(start, pos)
        if e <= s:
            continue
        out.append(text[pos:s])
        out.append(f"[REDACTED:{label}]")
        pos = e
    out.append(text[pos:])
    return "".join(out)


class StreamFilter:
    """Hold-back filter for one response."""

    def __init__(self, matcher: Matcher) -> None:
        self._m = matcher
        self._ctx = ""
        self._pending = ""
        self.held_chars = 0

    def _step(self, final: bool) -> Step:
        text = self._ctx + self._pending
        base = len(self._ctx)
        findings, hold = self._m.scan(text, stream=not final)
        live = [f for f in findings if f.end > base]
        # A match that may still grow ("secret" -> "secretary") is held, not judged yet.
        blockers = sorted({f.rule_id for f in live if f.action == "block" and (f.final or final)})
        if blockers:
            return Step("", [], blockers)
        hold = max(hold, base)
        if final:
            hold = len(text)
        # act on complete matches that are released now; the rest are seen again later
        applied = [f for f in live if f.end <= hold and (f.final or final)]
        release = redact(text[base:hold], [f for f in applied if f.start >= base], base)
        self._pending = text[hold:]
        self._ctx = (self._ctx + release)[-CONTEXT_CHARS:]
        self.held_chars = len(self._pending)
        return Step(release, applied)

    def feed(self, delta: str) -> Step:
        """Take the next piece of text; returns what may be released now."""
        self._pending += delta
        return self._step(final=False)

    def finish(self) -> Step:
        """End of stream: judge what is held as complete, release the rest."""
        return self._step(final=True)
