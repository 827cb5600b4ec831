"""Channel tokens end to end: ``[[channels]] token = true`` joined with ``JOIN {channel, token}``.

A real node, real WebSocket clients with cookies; tokens signed by PyJWT (HS256).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from wsgate.auth.principal import Principal

from ..e2e.gateway import API_KEY, ORIGIN, Peer, Running, make_config, running
from ..helpers import eventually
from .jwks_server import jwks_server
from .tokens import SECRET, hs256, rsa_pair

PRIVATE = "acme:private/deal-7"


def config(**auth: Any) -> Any:
    return make_config(
        auth={"jwt": {"secret": SECRET}, "clock_skew_s": 0, **auth},
        channels=[{"match": "*:private/*", "token": True},
                  {"match": "*:private/vip-*", "roles": ["vip"]}],
    )


def two_orgs(gw: Running) -> str:
    """A cookie of ann, a member of acme and beta."""
    principal = Principal(sub="ann", org="acme", orgs=("acme", "beta"))
    return f"{gw.node.config.auth.cookie_name}={gw.codec.seal(principal)}"


def grant(channel: str = PRIVATE, sub: str = "ann", exp_in: int = 600, **extra: Any) -> str:
    now = int(time.time())
    return hs256({"sub": sub, "channel": channel, "iat": now, "exp": now + exp_in, **extra})


async def join(peer: Peer, channel: str, token: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"channel": channel}
    if token is not None:
        payload["token"] = token
    await peer.send("@@wsgate/JOIN", payload, id="j")
    for _ in range(100):
        action = await peer.recv()
        if action.get("meta", {}).get("inReplyTo") == "j":
            return action
    raise AssertionError("no answer to JOIN")


def code(answer: dict[str, Any]) -> str:
    return str(answer["payload"].get("code", answer["type"]))


async def test_a_token_channel_needs_a_token_and_accepts_a_good_one() -> None:
    async with running(config()) as gw, gw.peer("ann") as peer:
        assert code(await join(peer, PRIVATE, None)) == "FORBIDDEN"
        assert code(await peer.join("acme:open")) == "@@wsgate/JOINED"  # other channels: as before
        assert code(await join(peer, PRIVATE, grant())) == "@@wsgate/JOINED"
        assert gw.node.channel_tokens.granted == 1


@pytest.mark.parametrize(("token", "expected"), [
    (grant(sub="bob"), "FORBIDDEN"),                         # another user's grant
    (grant(channel="acme:private/deal-8"), "FORBIDDEN"),     # another channel's
    (grant(orgs=["beta"]), "FORBIDDEN"),                     # another organization's
    (hs256({"sub": "ann", "exp": int(time.time()) + 600}), "UNAUTHENTICATED"),  # no channel claim
    (hs256({"sub": "ann", "channel": PRIVATE, "exp": int(time.time()) + 600}, "x" * 40),
     "UNAUTHENTICATED"),                                     # a bad signature
    (grant(exp_in=-5), "UNAUTHENTICATED"),                   # expired
])
async def test_a_wrong_channel_token_is_refused(token: str, expected: str) -> None:
    async with running(config()) as gw, gw.peer(None, cookie=two_orgs(gw)) as peer:
        assert code(await join(peer, PRIVATE, token)) == expected
        assert gw.node.channel_tokens.granted == 0
        assert gw.node.gateway is not None and not gw.node.gateway.pool.channel(PRIVATE)


async def test_a_token_never_crosses_an_organization_the_user_lacks() -> None:
    async with running(config()) as gw, gw.peer("ann") as peer:  # in acme only
        other = "beta:private/deal-7"
        assert code(await join(peer, other, grant(channel=other, orgs=["beta"]))) == "FORBIDDEN"


async def test_a_token_adds_to_the_other_rules() -> None:
    vip = "acme:private/vip-1"
    async with running(config()) as gw:
        async with gw.peer("ann") as peer:
            assert code(await join(peer, vip, grant(channel=vip))) == "FORBIDDEN"
        async with gw.peer("ann", roles=("vip",)) as peer:
            assert code(await join(peer, vip, grant(channel=vip))) == "@@wsgate/JOINED"


async def test_a_granted_membership_is_left_when_its_token_expires() -> None:
    async with running(config()) as gw, gw.peer("ann") as peer:
        assert code(await join(peer, PRIVATE, grant(exp_in=2))) == "@@wsgate/JOINED"
        left = await peer.expect("@@wsgate/LEFT", timeout=5)
        assert left["payload"] == {"channel": PRIVATE, "reason": "the channel token expired"}
        await eventually(lambda: gw.node.channel_tokens.granted == 0, what="the grant freed")
        assert gw.node.channel_tokens.wheel.__len__() == 0


async def test_navigate_carries_the_token_and_a_close_frees_the_grant() -> None:
    async with running(config()) as gw:
        async with gw.peer("ann") as peer:
            await peer.send("@@wsgate/NAVIGATE", {"view": "private/deal-7", "token": grant()},
                            id="n")
            joined = await peer.expect("@@wsgate/JOINED")
            assert joined["payload"]["channel"] == PRIVATE
            assert gw.node.channel_tokens.granted == 1
        await eventually(lambda: gw.node.channel_tokens.granted == 0, what="the grant freed")


async def test_a_channel_token_is_no_connection_token() -> None:
    bearer = {"Authorization": f"Bearer {grant()}"}
    async with running(config()) as gw, websockets.connect(
        gw.url, origin=ORIGIN, open_timeout=5, additional_headers=bearer  # type: ignore[arg-type]
    ) as ws:
        peer = Peer(ws)
        assert code(await peer.recv()) == "UNAUTHENTICATED"
        with pytest.raises(ConnectionClosed) as closed:
            await peer.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_the_internal_api_grants_a_token_channel_by_itself() -> None:
    async with running(config()) as gw, gw.peer("ann") as peer:
        url = f"{gw.node.api_url}/v1/connections/{peer.id}/channels/{quote(PRIVATE, safe='')}"
        async with aiohttp.ClientSession() as http, http.put(
            url, headers={"Authorization": f"Bearer {API_KEY}"}
        ) as resp:
            assert resp.status == 200, await resp.text()
        assert (await peer.expect("@@wsgate/JOINED"))["payload"]["channel"] == PRIVATE


async def test_channel_token_checks_in_flight_per_connection_are_bounded() -> None:
    key = rsa_pair("slow-1")
    async with jwks_server([key]) as issuer:
        issuer.gate = asyncio.Event()  # the issuer answers only when the test says so
        cfg = make_config(auth={"jwt": {"jwks_url": issuer.url}, "clock_skew_s": 0},
                          channels=[{"match": "*:private/*", "token": True}])
        async with running(cfg) as gw, gw.peer("ann") as peer:
            now = int(time.time())
            for i in range(6):
                channel = f"acme:private/d{i}"
                token = key.sign({"sub": "ann", "channel": channel, "iat": now, "exp": now + 600})
                await peer.send("@@wsgate/JOIN", {"channel": channel, "token": token}, id=f"j{i}")
            answers = [await peer.expect("@@wsgate/ERROR") for _ in range(2)]
            assert {a["meta"]["inReplyTo"] for a in answers} == {"j4", "j5"}
            assert {a["payload"]["code"] for a in answers} == {"RATE_LIMITED"}
            assert gw.node.channel_tokens.checking == 4
            issuer.gate.set()
            joined = [await peer.expect("@@wsgate/JOINED") for _ in range(4)]
            assert {j["meta"]["inReplyTo"] for j in joined} == {"j0", "j1", "j2", "j3"}
            await eventually(lambda: gw.node.channel_tokens.checking == 0, what="checks freed")
