from __future__ import annotations

import pytest

from edged.errors import Unavailable
from edged.router.policy import decide
from edged.types import ChatMessage, ReplyAddress, Request, Verdict


def req(route: str = "auto", sensitivity: str = "normal") -> Request:
    return Request(
        id="r",
        messages=(ChatMessage("user", "hi"),),
        max_tokens=8,
        temperature=0.0,
        stream=True,
        route=route,  # type: ignore[arg-type]
        sensitivity=sensitivity,  # type: ignore[arg-type]
        reply=ReplyAddress("reply/x"),
        received_at_s=0.0,
    )


def test_local_only_device_routes_locally_with_a_reason() -> None:
    r = req()
    assert decide(r, Verdict(r), {"local": True}).reasons == ("only_local",)
    r = req("local")
    assert decide(r, Verdict(r), {"local": True}).reasons == ("hint",)


def test_private_and_force_local_stay_local_even_when_cloud_is_asked() -> None:
    r = req("cloud", "private")
    d = decide(r, Verdict(r), {"local": True, "cloud": True})
    assert d.backend == "local" and d.reasons == ("private",)
    r = req("cloud")
    d = decide(r, Verdict(r, force_local=True), {"local": True, "cloud": True})
    assert d.backend == "local"


def test_cloud_hint_without_cloud_is_unavailable() -> None:
    r = req("cloud")
    with pytest.raises(Unavailable, match="cloud"):
        decide(r, Verdict(r), {"local": True})
    assert decide(r, Verdict(r), {"local": True, "cloud": True}).backend == "cloud"


def test_no_local_model_is_unavailable() -> None:
    r = req()
    with pytest.raises(Unavailable, match="local"):
        decide(r, Verdict(r), {"local": False})
