"""Assembling a remote backend's streamed tool-call fragments into whole calls.

An OpenAI-compatible stream sends ``choices[0].delta.tool_calls`` as a list of fragments,
each with an ``index`` naming the call it belongs to. The first fragment of a call usually
carries ``id``, ``type: "function"`` and ``function.name``; later ones carry pieces of
``function.arguments``, a JSON text split anywhere (inside a string, inside a ``\\u``
escape, between the bytes of nothing in particular). :class:`CallAssembler` keeps the
calls by index and gives them back whole, in index order, once the stream has ended:

- ``id`` and ``name`` are set once; a repeat with the same value is fine, a different value
  is a protocol error. ``None`` or ``""`` means "not in this fragment".
- ``type``, when present, must be ``"function"``.
- A fragment without ``index`` belongs to call 0, but only while no index other than 0 has
  been seen (some servers omit it for a single call); after that it is a protocol error.
- Argument pieces are appended; the per-call and per-turn byte limits and the number of
  calls are checked as fragments arrive, so a hostile server cannot make edged hold an
  unbounded call.
- :meth:`CallAssembler.finish` returns ``tuple[ToolCall, ...]`` in index order; a call with
  no arguments at all gets ``"{}"``; a call without a name is a protocol error; a call
  without an id gets ``""`` (edged.tools.validate assigns one).

Every protocol error is :class:`~edged.errors.ToolCallInvalid` with a message that says what
the backend sent (never the argument text: it may hold the user's data). Whether a call's
tool exists and its arguments validate is not checked here: that is
:func:`edged.tools.validate.validate_calls`, which every call passes before it leaves the
device. Pure code: no I/O.

Fragments may be dicts (the JSON of a chunk) or the OpenAI SDK's objects
(``ChoiceDeltaToolCall`` with ``.index``, ``.id``, ``.type``, ``.function.name``,
``.function.arguments``); the SDK does not validate what the server sent, so every field is
type-checked here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edged.errors import ToolCallInvalid
from edged.types import ToolCall

#: Most UTF-8 bytes one call may hold (id, name and arguments together).
MAX_CALL_BYTES = 64 * 1024
#: Most UTF-8 bytes all the calls of one turn may hold together.
MAX_TURN_BYTES = 256 * 1024
#: Most calls one turn may make (the same figure as edged.tools.validate.MAX_CALLS_PER_TURN).
MAX_CALLS = 16

_SCALARS = (str, bytes, int, float, bool, list, tuple)


@dataclass(slots=True)
class _Partial:
    """One call being assembled."""

    id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)
    nbytes: int = 0


def _get(obj: Any, name: str) -> Any:
    """Field ``name`` of a dict or an SDK object; None when absent."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


class CallAssembler:
    """Tool-call fragments in, whole calls out (see the module docstring).

    Feed every fragment of one stream with :meth:`feed` (or a chunk's whole list with
    :meth:`feed_all`), then call :meth:`finish` once the stream has ended with a
    ``finish_reason``. An assembler serves one attempt of one turn.
    """

    def __init__(
        self,
        *,
        max_call_bytes: int = MAX_CALL_BYTES,
        max_turn_bytes: int = MAX_TURN_BYTES,
        max_calls: int = MAX_CALLS,
    ) -> None:
        self.max_call_bytes = max_call_bytes
        self.max_turn_bytes = max_turn_bytes
        self.max_calls = max_calls
        self._calls: dict[int, _Partial] = {}
        self._nbytes = 0
        #: Fragments fed so far.
        self.fragments = 0

    @property
    def started(self) -> bool:
        """Whether any fragment has been fed."""
        return self.fragments > 0

    @property
    def nbytes(self) -> int:
        """UTF-8 bytes held over all calls (ids, names, arguments)."""
        return self._nbytes

    def feed_all(self, fragments: Any) -> None:
        """Feed a chunk's ``delta.tool_calls`` (a list of fragments; None is no list)."""
        if fragments is None:
            return
        if not isinstance(fragments, Iterable) or isinstance(fragments, str | bytes | Mapping):
            raise ToolCallInvalid(
                f"the backend sent delta.tool_calls as {type(fragments).__name__}, not a list"
            )
        for fragment in fragments:
            self.feed(fragment)

    def feed(self, fragment: Any) -> None:
        """Add one fragment; raises ToolCallInvalid on a protocol error or a broken limit."""
        if fragment is None or isinstance(fragment, _SCALARS):
            raise ToolCallInvalid(
                f"the backend sent a tool-call fragment that is {type(fragment).__name__}, "
                "not an object"
            )
        self.fragments += 1
        index = self._index(_get(fragment, "index"))
        where = f"tool call {index}"
        kind = _get(fragment, "type")
        if kind is not None and kind != "function":
            raise ToolCallInvalid(f"{where}: type is {_show(kind)}, not 'function'")
        function = _get(fragment, "function")
        if function is not None and isinstance(function, _SCALARS):
            raise ToolCallInvalid(f"{where}: function is {type(function).__name__}, not an object")
        call_id = _text(_get(fragment, "id"), where, "id")
        name = _text(_get(function, "name"), where, "function.name") if function else None
        args = _text(_get(function, "arguments"), where, "function.arguments") if function else None

        call = self._calls.get(index)
        if call is None:
            if len(self._calls) >= self.max_calls:
                raise ToolCallInvalid(
                    f"the backend made more than {self.max_calls} tool calls in one turn"
                )
            call = self._calls[index] = _Partial()
        added = 0
        if call_id:
            if call.id is None:
                call.id = call_id
                added += len(call_id.encode())
            elif call.id != call_id:
                raise ToolCallInvalid(
                    f"{where}: the backend changed its id from {_show(call.id)} to {_show(call_id)}"
                )
        if name:
            if call.name is None:
                call.name = name
                added += len(name.encode())
            elif call.name != name:
                raise ToolCallInvalid(
                    f"{where}: the backend changed its function name from {_show(call.name)} "
                    f"to {_show(name)}"
                )
        if args:
            call.arguments.append(args)
            added += len(args.encode("utf-8", "surrogatepass"))
        call.nbytes += added
        self._nbytes += added
        if call.nbytes > self.max_call_bytes:
            raise ToolCallInvalid(
                f"{where} ({call.name or 'no name yet'}) is over {self.max_call_bytes} bytes"
            )
        if self._nbytes > self.max_turn_bytes:
            raise ToolCallInvalid(f"the turn's tool calls are over {self.max_turn_bytes} bytes")

    def _index(self, raw: Any) -> int:
        if raw is None:
            others = [i for i in self._calls if i != 0]
            if others:
                raise ToolCallInvalid(
                    "the backend sent a tool-call fragment without an index after calls with "
                    f"index {others[0]}; which call it belongs to is unknown"
                )
            return 0
        if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
            raise ToolCallInvalid(
                f"the backend sent a tool-call fragment with index {_show(raw)}, "
                "not a non-negative integer"
            )
        return raw

    def finish(self) -> tuple[ToolCall, ...]:
        """The calls, whole, in index order (empty when no fragment came). Arguments never
        sent are ``"{}"``; a call that never got a name is a protocol error."""
        out: list[ToolCall] = []
        for index in sorted(self._calls):
            call = self._calls[index]
            if call.name is None:
                raise ToolCallInvalid(f"tool call {index}: the backend never sent its name")
            arguments = _join(call.arguments, index)
            out.append(ToolCall(call.id or "", call.name, arguments if arguments else "{}"))
        return tuple(out)


def _join(pieces: list[str], index: int) -> str:
    """The pieces joined. A character outside the BMP split between two fragments arrives as
    two lone surrogates (each chunk's JSON escaped one half); they are paired here, and a
    surrogate left alone is a protocol error (it cannot be sent on as UTF-8)."""
    text = "".join(pieces)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        except UnicodeDecodeError:
            raise ToolCallInvalid(
                f"tool call {index}: the arguments hold a lone UTF-16 surrogate"
            ) from None
    return text


def _text(value: Any, where: str, what: str) -> str | None:
    """A string field of a fragment (None when absent)."""
    if value is None or isinstance(value, str):
        return value
    raise ToolCallInvalid(f"{where}: {what} is {type(value).__name__}, not a string")


def _show(value: Any, limit: int = 40) -> str:
    """A short, quoted form of a value the backend sent, for a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
