"""The local backend on the real default model."""

from __future__ import annotations

import asyncio
import codecs
import time
from pathlib import Path

import pytest

from edged.backends.llama import LlamaBackend
from edged.config import LocalModelConfig
from edged.errors import BadRequest
from edged.types import ChatMessage, Finished, ReplyAddress, Request, Started, TextDelta
from tests.helpers import TEST_N_THREADS

pytestmark = pytest.mark.integration


def request(prompt: str, max_tokens: int = 16, temperature: float = 0.0) -> Request:
    return Request(
        id="x",
        messages=(ChatMessage("user", prompt),),
        max_tokens=max_tokens,
        temperature=temperature,
        stream=True,
        route="auto",
        sensitivity="normal",
        reply=ReplyAddress("reply/x"),
        received_at_s=time.monotonic(),
    )


def test_stream_order_usage_and_a_repeated_prompt(model_file: Path) -> None:
    """Started, text deltas, Finished, with usage that adds up; asked again, the same prompt
    (its KV cache now reused) is served the same way. The two texts are not compared: at
    temperature 0 decoding is greedy, but a reused prefix evaluates the prompt in another
    batch shape, and on some CPUs that picks another token (docs/protocol.md)."""

    async def main() -> None:
        b = LlamaBackend(
            name="local",
            model_path=model_file,
            cfg=LocalModelConfig(n_threads=TEST_N_THREADS, n_ctx=512),
        )
        await b.start()
        try:
            prompt_tokens = []
            for _ in range(2):  # the second run reuses the prompt's KV cache
                events = [ev async for ev in b.generate(request("Name a fruit.", 12))]
                assert isinstance(events[0], Started)
                assert isinstance(events[-1], Finished)
                assert sum(isinstance(e, Started | Finished) for e in events) == 2
                deltas = [e for e in events if isinstance(e, TextDelta)]
                assert deltas == events[1:-1]
                fin = events[-1]
                assert fin.usage.completion_tokens == sum(d.tokens for d in deltas)
                assert 0 < fin.usage.completion_tokens <= 12
                assert fin.finish_reason == ("length" if fin.usage.completion_tokens == 12
                                             else "stop")  # fmt: skip
                assert "".join(d.text for d in deltas).strip()
                prompt_tokens.append(fin.usage.prompt_tokens)
            assert prompt_tokens[0] == prompt_tokens[1] > 5  # the same prompt, counted whole
        finally:
            await b.close()

    asyncio.run(main())


def test_closing_the_stream_cancels_and_the_next_request_is_served(model_file: Path) -> None:
    async def main() -> None:
        b = LlamaBackend(
            name="local",
            model_path=model_file,
            cfg=LocalModelConfig(n_threads=TEST_N_THREADS, n_ctx=1024),
        )
        await b.start()
        try:
            gen = b.generate(request("Write a long story about a dragon.", 500))
            got = 0
            async for ev in gen:
                if isinstance(ev, TextDelta):
                    got += 1
                    if got == 3:
                        break
            await gen.aclose()
            t0 = time.monotonic()
            events = [ev async for ev in b.generate(request("Say hi.", 4))]
            # the cancelled job stopped within a token or two, not after 500 tokens
            assert time.monotonic() - t0 < 2.0
            assert isinstance(events[-1], Finished)
            assert b.waiting == 0
        finally:
            await b.close()

    asyncio.run(main())


def test_prompt_longer_than_context_is_bad_request(model_file: Path) -> None:
    async def main() -> None:
        b = LlamaBackend(
            name="local",
            model_path=model_file,
            cfg=LocalModelConfig(n_threads=TEST_N_THREADS, n_ctx=128),
        )
        await b.start()
        try:
            with pytest.raises(BadRequest, match="context"):
                async for _ in b.generate(request("word " * 400)):
                    pass
        finally:
            await b.close()

    asyncio.run(main())


def test_incremental_detokenization_keeps_multibyte_characters(model_file: Path) -> None:
    """Per-token bytes through a UTF-8 incremental decoder rebuild text exactly, even where
    one character's bytes are split across tokens (emoji, CJK, accents)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(model_file), n_ctx=128, n_threads=TEST_N_THREADS, verbose=False)
    text = "Crème brûlée 🍮 costs 5€ in 東京; naïve café 👩‍🚀!"
    tokens = llm.tokenize(text.encode(), add_bos=False, special=False)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces = [decoder.decode(llm.detokenize([t])) for t in tokens]
    pieces.append(decoder.decode(b"", final=True))
    split = sum(1 for t in tokens if not llm.detokenize([t]).decode("utf-8", "ignore"))
    assert split > 0, "the sample should split at least one character across tokens"
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)


def test_a_stuck_decode_is_detected_and_the_backend_restarted(model_file: Path) -> None:
    """llama.cpp blocking forever is simulated by a generate() that sleeps; past the
    request's deadline the backend reports itself stuck and unhealthy, and a restart on a
    fresh thread serves again."""
    import threading

    async def main() -> None:
        b = LlamaBackend(name="local", model_path=model_file,
                         cfg=LocalModelConfig(n_threads=TEST_N_THREADS, n_ctx=256))  # fmt: skip
        await b.start()
        release = threading.Event()
        real = b._llm

        class Stuck:
            def __getattr__(self, name: str) -> object:
                return getattr(real, name)

            def generate(self, *a: object, **k: object) -> object:
                release.wait(30)  # a decode that does not come back
                yield from ()

        b._llm = Stuck()
        req = request("Hi.", 4)
        req = type(req)(**{**{f: getattr(req, f) for f in req.__dataclass_fields__},
                           "deadline_at_s": time.monotonic() + 0.2})  # fmt: skip
        gen = b.generate(req)
        assert isinstance(await gen.__anext__(), Started)
        assert b.healthy()
        await asyncio.sleep(0.3)
        assert b.stuck(grace_s=0.0) is not None  # past its deadline
        await gen.aclose()
        await b.restart()
        release.set()  # the abandoned thread may now end; nothing waits for it
        assert b.healthy() and b.stuck() is None
        events = [ev async for ev in b.generate(request("Say hi.", 4))]
        assert isinstance(events[-1], Finished)
        await b.close()

    asyncio.run(main())
