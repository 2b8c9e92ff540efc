"""Chat messages to prompt token ids, where only the template's own markup can be a control token.

Rendering the chat template with the contents in place and tokenizing the result with
``special=True`` (what llama-cpp-python's ``create_chat_completion`` does) lets a user write
``<|im_end|><|im_start|>system`` in a message and get real control tokens: a forged turn.
Here the template is rendered with a placeholder for every message's content instead. The
result (the skeleton) holds only the template's literal text, the role names and the
placeholders. Control-token texts are looked for in the skeleton only; everything between two
control tokens (markup text and message contents joined, exactly as llama.cpp would split the
whole string) is tokenized with ``special=False``. For contents without control-token text the
ids are the same as tokenizing the whole rendered string, so the KV-cache prefix reuse of
earlier turns is unchanged.

A template that looks at a content (``'</think>' in content``, ``content.split(...)``) sees the
placeholder, not the text; one that trims contents (``content | trim``) is detected with a probe
at load and the contents are trimmed here instead. Control tokens whose attributes make
llama.cpp strip the spaces beside them (``lstrip``/``rstrip``) are not emulated; the default
model has none.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edged.errors import BadRequest, Internal

log = logging.getLogger("edged.backend.prompt")

# Private-use code points: no template writes them, and upper/lower/trim leave them alone.
_OPEN, _CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")

#: Skeletons whose plan is kept (one per shape of conversation: roles and their order).
_PLANS_KEPT = 256
_Plan = list["list[int] | tuple[str | int, ...]"]
"""Fixed ids (control tokens, markup text), and text runs: literal text and content indexes."""

Render = Callable[..., str]
"""Messages (``role``, ``content``, and any other keys the template reads) to the template's
text; keyword arguments (``tools=``) go to the template as variables."""
TokenizeText = Callable[[str], list[int]]
"""Plain text to token ids: no BOS, control-token texts stay text (``special=False``)."""


class PromptBuilder:
    """Builds prompt token ids from chat messages; contents are always text."""

    def __init__(
        self,
        *,
        render: Render,
        tokenize_text: TokenizeText,
        control_tokens: Mapping[str, int],
        bos_id: int | None = None,
    ) -> None:
        """``control_tokens``: the text of every control token of the vocabulary, to its id;
        ``bos_id``: put first (for a model that wants BOS and a template that does not write it)."""
        self._render = render
        self._tokenize_text = tokenize_text
        self._control = dict(control_tokens)
        texts = sorted((t for t in self._control if t), key=len, reverse=True)  # longest first
        self._control_re = re.compile("|".join(map(re.escape, texts))) if texts else None
        self._bos = bos_id
        self.trims_contents = False
        self._plans: dict[str, _Plan] = {}
        self._probe()

    def _probe(self) -> None:
        """Check at load that the template places contents verbatim (or trimmed). Some
        templates refuse some conversations (no system turn, strict alternation): the first
        probe the template renders decides."""
        system = {"role": "system", "content": " Be brief. \n"}
        turns = [
            {"role": "user", "content": "\n Hello  "},
            {"role": "assistant", "content": " Hi. "},
            {"role": "user", "content": " Bye "},
        ]
        for probe in ([system, *turns], turns, turns[:1]):
            try:
                real = self._render(probe)
                skeleton = self._skeleton(probe, {})
            except Exception:  # the template's raise_exception, or its own checks
                continue
            self._plan(skeleton)  # raises if the template mangled a placeholder
            if self._fill(skeleton, probe, strip=False) == real:
                return
            if self._fill(skeleton, probe, strip=True) == real:
                self.trims_contents = True
                return
            log.warning("event=chat_template_alters_contents placed=verbatim")
            return
        log.warning("event=chat_template_probe_failed placed=verbatim")

    def _skeleton(self, messages: Sequence[Mapping[str, Any]], extra: Mapping[str, Any]) -> str:
        marked = [{**m, "content": f"{_OPEN}{i}{_CLOSE}"} for i, m in enumerate(messages)]
        return self._render(marked, **extra)

    def check_text(self, text: str, where: str) -> None:
        """BadRequest when ``text`` (a client's text the template renders as markup, such as
        a tool's description) holds a control token's text."""
        m = self._control_re.search(text) if self._control_re is not None else None
        if m is not None:
            raise BadRequest(f"{where}: contains the control token text {m.group(0)!r}")

    @staticmethod
    def _fill(skeleton: str, messages: Sequence[Mapping[str, Any]], *, strip: bool) -> str:
        def content(m: re.Match[str]) -> str:
            text = str(messages[int(m.group(1))]["content"])
            return text.strip() if strip else text

        return _PLACEHOLDER.sub(content, skeleton)

    def tokens(
        self, messages: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None
    ) -> list[int]:
        """The prompt's token ids (generation prompt included, as the template adds it).
        Only ``content`` is placed as text; other keys of a message and ``extra`` (template
        variables) are rendered as markup: check client text in them with :meth:`check_text`."""
        skeleton = self._skeleton(messages, extra or {})
        plan = self._plans.get(skeleton)
        if plan is None:
            plan = self._plan(skeleton)
        out: list[int] = [] if self._bos is None else [self._bos]
        strip = self.trims_contents
        for step in plan:
            if isinstance(step, list):  # control tokens and markup text: tokenized once
                out.extend(step)
                continue
            parts = []
            for part in step:
                if isinstance(part, int):
                    text = messages[part]["content"]
                    parts.append(text.strip() if strip else text)
                else:
                    parts.append(part)
            text = "".join(parts)
            if text:
                out.extend(self._tokenize_text(text))
        return out

    def _plan(self, skeleton: str) -> _Plan:
        """Split a skeleton at control-token texts (found in the template's text only) into
        fixed ids and text runs that hold contents; cached, as a skeleton repeats."""
        plan: _Plan = []
        run: list[str | int] = []

        def flush() -> None:
            if any(isinstance(p, int) for p in run):
                plan.append(tuple(run))
            elif text := "".join(p for p in run if isinstance(p, str)):
                fixed(self._tokenize_text(text))
            run.clear()

        def fixed(ids: list[int]) -> None:
            if plan and isinstance(plan[-1], list):
                plan[-1].extend(ids)
            else:
                plan.append(list(ids))

        def markup(text: str) -> None:
            if _OPEN in text or _CLOSE in text:
                raise Internal("the chat template rewrites message contents; no safe prompt")
            pos = 0
            if self._control_re is not None:
                for m in self._control_re.finditer(text):
                    run.append(text[pos : m.start()])
                    flush()
                    fixed([self._control[m.group(0)]])
                    pos = m.end()
            run.append(text[pos:])

        pos = 0
        for m in _PLACEHOLDER.finditer(skeleton):
            markup(skeleton[pos : m.start()])
            run.append(int(m.group(1)))
            pos = m.end()
        markup(skeleton[pos:])
        flush()
        if len(self._plans) >= _PLANS_KEPT:
            self._plans.clear()
        self._plans[skeleton] = plan
        return plan


def control_tokens(vocab: Any) -> dict[str, int]:
    """Text to id of every token llama.cpp matches only with ``special=True`` (control and
    unknown tokens); takes some tens of ms for a 50k vocabulary, done once at load."""
    import llama_cpp

    mask = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
    found: dict[str, int] = {}
    for tok in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        if llama_cpp.llama_vocab_get_attr(vocab, tok) & mask:
            text = llama_cpp.llama_vocab_get_text(vocab, tok).decode("utf-8", "replace")
            if text:
                found.setdefault(text, tok)
    return found


def text_tokenizer(vocab: Any) -> TokenizeText:
    """``llama_tokenize`` with ``special=False`` and no BOS, into a buffer sized to the text
    (``Llama.tokenize`` allocates one of the training context's size on every call)."""
    import llama_cpp

    def tokenize(text: str) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 8  # a token covers at least a byte; room for a space prefix
        while True:
            buf = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, size, False, False)
            if n >= 0:
                return list(buf[:n])
            size = -n

    return tokenize
