"""The llama.cpp engine: load a GGUF model, build prompt tokens, decode one job.

Shared by both local backends: :mod:`.thread` runs it on a decode thread in the daemon,
:mod:`.process` in a worker process. Everything here blocks; a decode job reports only
through ``emit`` and checks a cancel flag on every token, which is what lets it run
unchanged in either place. The token loop is ``Llama.generate`` plus incremental
detokenization (one token's bytes at a time through a UTF-8 incremental decoder), which is
what ``create_chat_completion(stream=True)`` cannot do cheaply: it re-detokenizes the whole
output on every token.

:class:`Merged` is the one loop, on the event loop's side, that turns what a job emitted
into the stream's events; :func:`stuck_reason` is the one rule for a job stuck past its
deadline.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edged.backends.chat_prompt import PromptBuilder, control_tokens, text_tokenizer
from edged.backends.llama.offload import offload_kwargs, warn_once
from edged.backends.llama.sessions import SessionCache, fingerprint, reused
from edged.config import LocalModelConfig
from edged.errors import BadRequest, EdgedError, Internal, Unavailable
from edged.grammar import TEXT, Plan, plan_for
from edged.tools import generic
from edged.types import (
    Finished,
    FinishReason,
    Request,
    Started,
    StreamEvent,
    TextDelta,
    Usage,
)

log = logging.getLogger("edged.backend.llama")

#: What a decode job emits: a stream event, or the error that ends it.
Item = StreamEvent | BaseException
#: A decode job this long past its request's deadline counts as stuck.
STUCK_GRACE_S = 5.0
#: A job for a request without a deadline counts as stuck after this long.
STUCK_NO_DEADLINE_S = 600.0


def stuck_reason(
    started_at_s: float, deadline_at_s: float | None, now_s: float, grace_s: float = STUCK_GRACE_S
) -> str | None:
    """Why a job started at ``started_at_s`` looks stuck (past its request's deadline plus
    ``grace_s``; ``STUCK_NO_DEADLINE_S`` for one without a deadline), or None."""
    limit = deadline_at_s if deadline_at_s is not None else started_at_s + STUCK_NO_DEADLINE_S
    if now_s <= limit + grace_s:
        return None
    return f"decode job running {now_s - started_at_s:.0f} s, past its deadline"


class Merged:
    """The events of one job from the queue its ``emit`` fills, with the text pieces that
    piled up while the consumer was busy merged into one ``TextDelta`` (fewer messages).
    An error put in the queue is raised."""

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self._queue = queue
        self._pending: Any = None

    async def next(self) -> StreamEvent:
        """The next event (after ``Finished``: do not call again)."""
        item = self._pending if self._pending is not None else await self._queue.get()
        self._pending = None
        if isinstance(item, TextDelta):
            text, n = item.text, item.tokens
            while not self._queue.empty():
                nxt = self._queue.get_nowait()
                if not isinstance(nxt, TextDelta):
                    self._pending = nxt
                    break
                text += nxt.text
                n += nxt.tokens
            return TextDelta(text, n)
        if isinstance(item, BaseException):
            raise item
        ev: StreamEvent = item
        return ev


#: How long a cancelled running job is waited for (its ``Finished`` comes within a token).
CANCEL_WAIT_S = 0.2


async def finish_cancelled(
    events: Merged, running: bool, produced: int, wait_s: float = CANCEL_WAIT_S
) -> Finished:
    """The ``Finished`` of a job the client cancelled (its cancel flag already set): for
    a running job, its own (usage counted by the decode), text after the cancel dropped,
    waiting at most ``wait_s``; for a queued one, or past that, at once with the tokens
    counted so far (``produced``) and the prompt's size unknown."""
    if running:
        until = time.monotonic() + wait_s
        with contextlib.suppress(asyncio.TimeoutError, EdgedError):
            while (left := until - time.monotonic()) > 0:
                ev = await asyncio.wait_for(events.next(), left)
                if isinstance(ev, Finished):
                    return Finished("cancelled", ev.usage)
                if isinstance(ev, TextDelta):
                    produced += ev.tokens
    return Finished("cancelled", Usage(prompt_tokens=None, completion_tokens=produced))


class LlamaEngine:
    """A llama.cpp model: loaded once, one decode job at a time (blocking calls)."""

    def __init__(self, *, name: str, model_path: Path, cfg: LocalModelConfig) -> None:
        self.name = name
        self.model_path = model_path
        self.cfg = cfg
        self.llm: Any = None
        self.vocab: Any = None
        self._prompt: PromptBuilder | None = None
        #: How tool calls are written in prompts and parsed (edged.tools.generic).
        self.call_format = generic.GENERIC
        #: The role a tool result is rendered in (``tool`` where the template renders it).
        self.tool_role = "tool"
        self._grammar: Any = None  # the grammar engine, built at the first constrained job
        #: How the last constrained job went (constrained.Outcome; the bench reads it).
        self.last_outcome: Any = None
        #: (started, deadline) of the running job, monotonic seconds.
        self.job: tuple[float, float | None] | None = None
        self.rss_before_load_mb = float("nan")
        self.rss_after_load_mb = float("nan")
        #: Moving averages the router reads: decode tokens/s, and seconds from a job's start
        #: to its first token (prompt evaluation). None until measured.
        self.tokens_per_s: float | None = None
        self.ttft_s: float | None = None
        #: The conversation KV cache (built with the model).
        self.sessions: SessionCache | None = None

    def load(self) -> None:
        """Load the model (seconds for a large one)."""
        import llama_cpp  # heavy import, done off the event loop

        self.rss_before_load_mb = rss_mb()

        if not self.model_path.is_file():
            raise Unavailable(f"model file {self.model_path} is missing; run 'edged models fetch'")
        kwargs: dict[str, Any] = {
            "model_path": str(self.model_path),
            "n_ctx": self.cfg.n_ctx,
            "n_batch": self.cfg.n_batch,
            "verbose": False,
        }
        if self.cfg.n_threads is not None:
            kwargs["n_threads"] = self.cfg.n_threads
            kwargs["n_threads_batch"] = self.cfg.n_threads
        if self.cfg.seed >= 0:
            kwargs["seed"] = self.cfg.seed
        offload, warning = offload_kwargs(self.cfg, bool(llama_cpp.llama_supports_gpu_offload()))
        if warning is not None:  # asked for the GPU, built without it: the CPU, said once
            warn_once(self.name, warning)
        kwargs.update(offload)
        llm = llama_cpp.Llama(**kwargs)
        self.vocab = llm._model.vocab
        self._is_eog: Callable[[Any, int], bool] = llama_cpp.llama_vocab_is_eog
        self._prompt = prompt_builder(llm)
        self.call_format = generic.detect_format(llm.metadata.get("tokenizer.chat_template"))
        self.tool_role = tool_role(self._prompt)
        self._tokenize_text = text_tokenizer(self.vocab)
        self.llm = llm
        self.sessions = SessionCache(
            self.cfg.session_cache_mb,
            fingerprint(
                str(self.model_path.resolve()),
                self.model_path.stat().st_size,
                llm.metadata.get("tokenizer.chat_template"),
                self.cfg.system_prompt,
                self.cfg.n_ctx,
            ),
            self.cfg.session_cache_dir,
            self.cfg.session_cache_disk_mb,
        )
        self.rss_after_load_mb = rss_mb()

    def plan(self, request: Request) -> Plan:
        """How ``request`` is decoded (tools offered or not, which grammar); BadRequest for a
        combination of tools, tool_choice and response_format that cannot be served."""
        if not request.tools and request.tool_choice is None and request.response_format is None:
            return TEXT
        fmt = self.call_format
        return plan_for(request, fmt.open, fmt.close)

    def prompt_tokens(self, request: Request, plan: Plan | None = None) -> list[int]:
        """The chat prompt's token ids (runs on the decode thread). Only the template's own
        markup can become control tokens: every message content, the configured system
        prompt included, is tokenized as text (:mod:`edged.backends.chat_prompt`); tools are
        listed in a message's content (generic format) or checked for control-token text
        (a template that renders them itself)."""
        builder = self._prompt
        assert builder is not None
        plan = self.plan(request) if plan is None else plan
        tools = request.tools if plan.offer_tools else ()
        system = self.cfg.system_prompt
        if not self.call_format.template_tools:
            msgs = generic.generic_messages(
                request.messages, tools, system_prompt=system, tool_role=self.tool_role
            )
            return builder.tokens(msgs)
        messages = generic.template_messages(request.messages, system_prompt=system)
        extra = {"tools": generic.template_tools(tools)} if tools else {}
        for i, m in enumerate(messages):
            if "tool_calls" in m:
                builder.check_text(generic.compact(m["tool_calls"]), f"messages[{i}].tool_calls")
        if tools:
            builder.check_text(generic.compact(extra["tools"]), "tools")
        return builder.tokens(messages, extra)

    def grammar(self) -> Any:
        """The grammar engine for this model, built once: llguidance (its tokenizer takes
        about a second), or where it does not import llama.cpp's own grammar sampler on
        edged's GBNF (edged.grammar.gbnf), logged as a warning."""
        if self._grammar is None:
            from edged.grammar.gbnf import GbnfEngine
            from edged.grammar.llg import LlgEngine, unavailable_reason

            why = unavailable_reason()
            if why is None:
                self._grammar = LlgEngine(self.vocab)
            else:  # llama.cpp's grammar sampler: slower, no number ranges
                log.warning(
                    "event=grammar_fallback backend=%s engine=gbnf reason=%r", self.name, why
                )
                self._grammar = GbnfEngine(self.vocab)
            log.info(
                "event=grammar_engine backend=%s engine=%s tokenizer_s=%.2f",
                self.name,
                self._grammar.name,
                getattr(self._grammar, "tokenizer_s", 0.0),
            )
        return self._grammar

    def decode(
        self, request: Request, cancel: threading.Event, emit: Callable[[Item], None]
    ) -> None:
        """One decode job (blocking). Reports only through ``emit``."""
        if cancel.is_set():  # cancelled while queued: nothing evaluated
            emit(Finished("cancelled", Usage(prompt_tokens=None, completion_tokens=0)))
            return
        t_job = time.monotonic()
        self.job = (t_job, request.deadline_at_s)
        emit(Started())
        try:
            llm = self.llm
            if llm is None:
                raise Unavailable(f"backend {self.name} has no model loaded")
            plan = self.plan(request)
            constraint = self.grammar().constraint(plan.grammar) if plan.grammar else None
            tokens = self.prompt_tokens(request, plan)
            n_ctx = self.cfg.n_ctx
            if len(tokens) >= n_ctx:
                raise BadRequest(f"prompt is {len(tokens)} tokens; the local context holds {n_ctx}")
            budget = min(request.max_tokens, n_ctx - len(tokens))
            cached = self._cached(llm, request, tokens)
            if self.cfg.seed >= 0:
                llm.set_seed(self.cfg.seed)
            if constraint is None:
                finish, produced, t_first = self._decode_text(request, tokens, budget, cancel, emit)
            else:
                from edged.backends.llama.constrained import ConstrainedJob

                job = ConstrainedJob(
                    llm=llm,
                    cfg=self.cfg,
                    request=request,
                    plan=plan,
                    constraint=constraint,
                    fmt=self.call_format,
                    tokenize_text=self._tokenize_text,
                    is_eog=lambda t: bool(self._is_eog(self.vocab, t)),
                    emit=emit,
                )
                out = self.last_outcome = job.run(tokens, budget, cancel.is_set)
                finish, produced, t_first = out.finish, out.produced, out.first_at_s
            if t_first is not None:
                # bench/overhead.py reads model_ttft_ms to tell edged's part of the TTFT
                log.debug(
                    "event=first_token id=%s prompt_tokens=%d model_ttft_ms=%.3f",
                    request.id,
                    len(tokens),
                    (t_first - t_job) * 1000,
                )
                self.ttft_s = _ema(self.ttft_s, t_first - t_job)
                if produced > 1 and constraint is None:  # forced tokens come in batches
                    rate = (produced - 1) / max(time.monotonic() - t_first, 1e-9)
                    self.tokens_per_s = _ema(self.tokens_per_s, rate)
            emit(Finished(finish, Usage(len(tokens), produced, cached)))
            if request.conversation is not None and self.sessions is not None:
                self.sessions.store(llm, request.conversation)  # after the reply: off its path
        except EdgedError as e:
            emit(e)
        except Exception as e:
            log.exception("event=decode_failed backend=%s", self.name)
            emit(Internal(f"local generation failed: {type(e).__name__}"))
        finally:
            if self.job is not None and self.job[0] == t_job:
                self.job = None

    def _cached(self, llm: Any, request: Request, tokens: list[int]) -> int:
        """Prompt tokens the decode will not evaluate again: the conversation's cached state
        restored first where it serves more of them (:mod:`.sessions`)."""
        sessions = self.sessions
        if request.conversation is not None and sessions is not None and sessions.enabled:
            return sessions.prepare(llm, request.conversation, tokens)
        return reused(llm.input_ids[: llm.n_tokens].tolist(), tokens)

    def _decode_text(
        self,
        request: Request,
        tokens: list[int],
        budget: int,
        cancel: threading.Event,
        emit: Callable[[Item], None],
    ) -> tuple[FinishReason, int, float | None]:
        """The unconstrained token loop: finish reason, tokens produced, first token at."""
        llm = self.llm
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab, is_eog = self.vocab, self._is_eog
        produced = 0
        finish: FinishReason = "length"
        t_first: float | None = None
        for tok in llm.generate(
            tokens,
            temp=request.temperature,
            top_k=self.cfg.top_k,
            top_p=self.cfg.top_p,
            min_p=self.cfg.min_p,
            repeat_penalty=self.cfg.repeat_penalty,
        ):
            if cancel.is_set():
                finish = "cancelled"
                break
            if is_eog(vocab, tok):
                finish = "stop"
                break
            produced += 1
            if t_first is None:
                t_first = time.monotonic()
            text = decoder.decode(llm.detokenize([tok]))
            if text:
                emit(TextDelta(text, 1))
            if produced >= budget:
                break
        tail = decoder.decode(b"", final=True)
        if tail:
            emit(TextDelta(tail, 0))
        return finish, produced, t_first


def prompt_builder(llm: Any) -> PromptBuilder:
    """The prompt builder for a loaded ``llama_cpp.Llama``: its chat template (rendered as
    llama-cpp-python does, BOS written only where the template writes it), or a plain
    ``role: content`` transcript for a model without one (BOS first if the model wants it)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    vocab = llm._model.vocab
    template = llm.metadata.get("tokenizer.chat_template")
    bos_id: int | None = None
    render: Callable[[list[dict[str, str]]], str]
    if template:
        m = llm._model
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=m.token_get_text(llm.token_eos()),
            bos_token=m.token_get_text(llm.token_bos()),
            add_generation_prompt=True,
        )

        def render(messages: list[dict[str, str]]) -> str:
            return formatter(messages=messages).prompt  # type: ignore[arg-type]

    else:  # a base model without a template: plain transcript

        def render(messages: list[dict[str, str]]) -> str:
            lines = [f"{msg['role']}: {msg['content']}" for msg in messages]
            return "\n".join([*lines, "assistant:"])

        if llm._model.add_bos_token() and llm.token_bos() >= 0:
            bos_id = llm.token_bos()
    return PromptBuilder(
        render=render,
        tokenize_text=text_tokenizer(vocab),
        control_tokens=control_tokens(vocab),
        bos_id=bos_id,
    )


def tool_role(builder: PromptBuilder) -> str:
    """``tool`` when the chat template renders a tool turn, else ``user`` (a template that
    refuses unknown roles)."""
    try:
        builder.tokens([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])
    except Exception:
        return "user"
    return "tool"


def _ema(old: float | None, new: float, weight: float = 0.3) -> float:
    return new if old is None else old + weight * (new - old)


def rss_mb() -> float:
    """Resident memory of this process, MB (Linux; NaN elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
