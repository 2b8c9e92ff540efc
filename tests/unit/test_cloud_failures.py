"""Cloud failures are told apart by the SDK's exception types (and the types of the HTTP
library under it), never by their messages."""

from __future__ import annotations

import openai

from edged.backends.failures import BadStream, classify, transport

http = transport()
REQ = http.Request("POST", "http://127.0.0.1:9/v1/chat/completions")


def raised(exc: Exception, cause: BaseException | None = None) -> Exception:
    """``exc`` as the SDK raises it: ``raise exc from cause``."""
    try:
        raise exc from cause
    except Exception as e:
        return e


def test_the_transport_is_the_sdks_http_library() -> None:
    assert isinstance(openai.DefaultAsyncHttpxClient(), http.AsyncClient)


def test_timeouts_by_kind() -> None:
    for cause, message in (
        (http.ConnectTimeout("c"), "cloud: connect timeout"),
        (http.PoolTimeout("p"), "cloud: pool timeout"),
        (http.WriteTimeout("w"), "cloud: write timeout"),
        (http.ReadTimeout("r"), "cloud: read timeout"),
    ):
        f = classify(raised(openai.APITimeoutError(request=REQ), cause))
        assert (f.message, f.retryable) == (message, True)
    # raised as it is while a stream is read (the SDK does not wrap it)
    assert classify(http.ReadTimeout("read")).message == "cloud: read timeout"


def test_connection_failures() -> None:
    refused = raised(http.ConnectError("x"), ConnectionRefusedError(111, "refused"))
    assert classify(raised(openai.APIConnectionError(request=REQ), refused)).message == (
        "cloud: connection refused"
    )
    dns = raised(openai.APIConnectionError(request=REQ), http.ConnectError("dns"))
    assert classify(dns).message == "cloud: connection failed"
    eof = raised(openai.APIConnectionError(request=REQ), http.RemoteProtocolError("eof"))
    assert classify(eof).message == "cloud: connection broken"


def test_statuses_and_retry_after() -> None:
    def status(code: int, headers: dict[str, str] | None = None) -> Exception:
        resp = http.Response(code, headers=headers or {}, request=REQ)
        return openai.APIStatusError("x", response=resp, body=None)

    f = classify(status(400))
    assert (f.message, f.retryable, f.status) == ("cloud: HTTP 400", False, 400)
    f = classify(status(429, {"Retry-After": "3"}))
    assert (f.retryable, f.status, f.retry_after_s) == (True, 429, 3.0)
    assert classify(status(500)).retry_after_s is None and classify(status(500)).retryable


def test_a_broken_stream_and_the_rest() -> None:
    assert classify(BadStream("malformed chunk")).message == "cloud: malformed chunk"
    assert classify(ValueError("x")).message == "cloud: malformed response"
    assert classify(KeyError("secret prompt")).message == "cloud: KeyError"  # no message read
