"""The local backend: a GGUF model run by llama-cpp-python, decoded off the event loop.

The model is loaded once. Decoding runs on one dedicated thread, so requests are served
one at a time in arrival order; the event loop only moves finished text pieces. The token
loop is ``Llama.generate`` plus incremental detokenization (one token's bytes at a time
through a UTF-8 incremental decoder), which is what ``create_chat_completion(stream=True)``
cannot do cheaply: it re-detokenizes the whole output on every token.

The decode job speaks to the event loop only through ``call_soon_threadsafe``; that keeps
the door open to moving it into a worker process (llama.cpp aborts the whole process on
some errors) without changing this interface.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from edged.backends.base import BackendSpec, register
from edged.backends.chat_prompt import PromptBuilder, control_tokens, text_tokenizer
from edged.config import LocalModelConfig
from edged.errors import BadRequest, EdgedError, Internal, Unavailable
from edged.types import (
    BackendStats,
    Finished,
    FinishReason,
    Request,
    Started,
    StreamEvent,
    TextDelta,
    Usage,
)

log = logging.getLogger("edged.backend.llama")

_Item = StreamEvent | BaseException
#: A decode job this long past its request's deadline counts as stuck.
STUCK_GRACE_S = 5.0
#: A job for a request without a deadline counts as stuck after this long.
STUCK_NO_DEADLINE_S = 600.0


@register("llama")
class LlamaBackend:
    """A llama.cpp model on this device."""

    needs_model_file: ClassVar[bool] = True

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> LlamaBackend:
        """The model file in ``spec``, run as ``[local]`` says."""
        assert spec.model_path is not None
        return cls(name=spec.name, model_path=spec.model_path, cfg=spec.cfg.local)

    def __init__(self, *, name: str, model_path: Path, cfg: LocalModelConfig) -> None:
        self.name = name
        self.model_path = model_path
        self._cfg = cfg
        self._llm: Any = None
        self._prompt: PromptBuilder | None = None
        self._vocab: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"decode-{name}")
        self._waiting = 0
        self._job: tuple[float, float | None] | None = None  # (started, deadline) of the job
        self._cancels: set[threading.Event] = set()
        self._restarting = False
        self.load_s: float | None = None
        self.rss_before_load_mb = float("nan")
        self.rss_after_load_mb = float("nan")
        #: Moving averages the router reads: decode tokens/s, and seconds from a job's start
        #: to its first token (prompt evaluation). None until measured.
        self.tokens_per_s: float | None = None
        self.ttft_s: float | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model on the decode thread (it can take seconds for large models)."""
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        await loop.run_in_executor(self._executor, self._load)
        self.load_s = time.monotonic() - t0
        log.info(
            "event=model_loaded backend=%s path=%s load_s=%.2f "
            "rss_before_mb=%.1f rss_after_mb=%.1f",
            self.name,
            self.model_path,
            self.load_s,
            self.rss_before_load_mb,
            self.rss_after_load_mb,
        )

    def _load(self) -> None:
        import llama_cpp  # heavy import, done off the event loop

        self.rss_before_load_mb = rss_mb()

        if not self.model_path.is_file():
            raise Unavailable(f"model file {self.model_path} is missing; run 'edged models fetch'")
        kwargs: dict[str, Any] = {
            "model_path": str(self.model_path),
            "n_ctx": self._cfg.n_ctx,
            "n_batch": self._cfg.n_batch,
            "verbose": False,
        }
        if self._cfg.n_threads is not None:
            kwargs["n_threads"] = self._cfg.n_threads
            kwargs["n_threads_batch"] = self._cfg.n_threads
        if self._cfg.seed >= 0:
            kwargs["seed"] = self._cfg.seed
        llm = llama_cpp.Llama(**kwargs)
        self._vocab = llm._model.vocab
        self._is_eog: Callable[[Any, int], bool] = llama_cpp.llama_vocab_is_eog
        self._prompt = prompt_builder(llm)
        self._llm = llm
        self.rss_after_load_mb = rss_mb()

    def healthy(self) -> bool:
        """True once the model is loaded, and while no decode is stuck or restarting."""
        return self._llm is not None and not self._restarting and self.stuck() is None

    def stuck(self, grace_s: float = STUCK_GRACE_S) -> str | None:
        """Why the decode thread looks stuck (a job past its request's deadline plus
        ``grace_s``), or None. A job without a deadline gets ``STUCK_NO_DEADLINE_S``."""
        job = self._job
        if job is None:
            return None
        started, deadline_at = job
        limit = deadline_at if deadline_at is not None else started + STUCK_NO_DEADLINE_S
        over = time.monotonic() - (limit + grace_s)
        if over <= 0:
            return None
        return f"decode job running {time.monotonic() - started:.0f} s, past its deadline"

    async def restart(self) -> None:
        """Abandon the decode thread (a stuck llama.cpp call cannot be interrupted; its
        cancel flag is set, so it stops if it ever returns) and load the model afresh on a
        new one. Unhealthy until loaded."""
        self._restarting = True
        old, self._executor = (
            self._executor,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"decode-{self.name}"),
        )
        for cancel in list(self._cancels):
            cancel.set()
        old.shutdown(wait=False, cancel_futures=True)
        self._job = None
        self._llm = None
        try:
            await self.start()
        finally:
            self._restarting = False

    def stats(self) -> BackendStats:
        """Queue depth, measured speeds, and whether a decode is stuck."""
        return BackendStats(queue_depth=self.waiting, tokens_per_s=self.tokens_per_s,
                            ttft_s=self.ttft_s, stuck=self.stuck())  # fmt: skip

    @property
    def waiting(self) -> int:
        """Generations queued or running on this backend."""
        return self._waiting

    async def close(self) -> None:
        """Stop the decode thread after the current job; free the model."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._executor.shutdown, True)
        if self._llm is not None:
            with contextlib.suppress(Exception):
                self._llm.close()
            self._llm = None

    # --- generation -------------------------------------------------------------------------------

    def prompt_tokens(self, request: Request) -> list[int]:
        """The chat prompt's token ids (runs on the decode thread). Only the template's own
        markup can become control tokens: every message content, the configured system
        prompt included, is tokenized as text (:mod:`edged.backends.chat_prompt`)."""
        assert self._prompt is not None
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        if self._cfg.system_prompt and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self._cfg.system_prompt})
        return self._prompt.tokens(messages)

    async def generate(self, request: Request) -> AsyncGenerator[StreamEvent, None]:
        """Stream one generation; closing the iterator cancels it."""
        if self._llm is None:
            raise Unavailable(f"backend {self.name} has no model loaded")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: _Item) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        self._waiting += 1
        self._cancels.add(cancel)
        job = loop.run_in_executor(self._executor, self._decode, request, cancel, emit)
        try:
            pending: _Item | None = None
            while True:
                item = pending if pending is not None else await queue.get()
                pending = None
                if isinstance(item, TextDelta):
                    # Coalesce what piled up while the consumer was busy: fewer messages.
                    text, n = item.text, item.tokens
                    while not queue.empty():
                        nxt = queue.get_nowait()
                        if not isinstance(nxt, TextDelta):
                            pending = nxt
                            break
                        text += nxt.text
                        n += nxt.tokens
                    yield TextDelta(text, n)
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
                    if isinstance(item, Finished):
                        return
        finally:
            cancel.set()
            self._cancels.discard(cancel)
            self._waiting -= 1
            job.add_done_callback(_log_job_failure)

    def _decode(
        self, request: Request, cancel: threading.Event, emit: Callable[[_Item], None]
    ) -> None:
        """The decode job, on the decode thread. Reports only through ``emit``."""
        if cancel.is_set():
            return
        t_job = time.monotonic()
        self._job = (t_job, request.deadline_at_s)
        emit(Started())
        try:
            llm = self._llm
            if llm is None:
                raise Unavailable(f"backend {self.name} has no model loaded")
            tokens = self.prompt_tokens(request)
            n_ctx = self._cfg.n_ctx
            if len(tokens) >= n_ctx:
                raise BadRequest(f"prompt is {len(tokens)} tokens; the local context holds {n_ctx}")
            budget = min(request.max_tokens, n_ctx - len(tokens))
            if self._cfg.seed >= 0:
                llm.set_seed(self._cfg.seed)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            vocab, is_eog = self._vocab, self._is_eog
            produced = 0
            finish: FinishReason = "length"
            t_first: float | None = None
            for tok in llm.generate(
                tokens,
                temp=request.temperature,
                top_k=self._cfg.top_k,
                top_p=self._cfg.top_p,
                min_p=self._cfg.min_p,
                repeat_penalty=self._cfg.repeat_penalty,
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
                    log.debug(
                        "event=first_token id=%s prompt_tokens=%d model_ttft_ms=%.3f",
                        request.id,
                        len(tokens),
                        (t_first - t_job) * 1000,
                    )
                text = decoder.decode(llm.detokenize([tok]))
                if text:
                    emit(TextDelta(text, 1))
                if produced >= budget:
                    break
            tail = decoder.decode(b"", final=True)
            if tail:
                emit(TextDelta(tail, 0))
            if t_first is not None:
                self.ttft_s = _ema(self.ttft_s, t_first - t_job)
                if produced > 1:
                    rate = (produced - 1) / max(time.monotonic() - t_first, 1e-9)
                    self.tokens_per_s = _ema(self.tokens_per_s, rate)
            emit(Finished(finish, Usage(prompt_tokens=len(tokens), completion_tokens=produced)))
        except EdgedError as e:
            emit(e)
        except Exception as e:
            log.exception("event=decode_failed backend=%s", self.name)
            emit(Internal(f"local generation failed: {type(e).__name__}"))
        finally:
            if self._job is not None and self._job[0] == t_job:
                self._job = None


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


def _log_job_failure(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("event=decode_job_crashed error=%r", fut.exception())
