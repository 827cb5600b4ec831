"""The internal API over real HTTP, beside real WebSocket clients; boto3 for @connections."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import aiohttp
import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from websockets.exceptions import ConnectionClosed

from ..e2e.gateway import ADMIN_KEY, API_KEY, make_config, running
from ..helpers import eventually

AUTH = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
AKID, SECRET_KEY = "AKIDWSGATETEST", "wsgate-test-secret-key"


async def _json(resp: aiohttp.ClientResponse) -> Any:
    return await resp.json()


async def test_every_v1_path_needs_a_bearer_key_but_health_does_not() -> None:
    async with running() as gw, aiohttp.ClientSession() as http:
        api = gw.node.api_url
        for method, path in [("POST", "/v1/publish"), ("GET", "/v1/hubs"), ("GET", "/v1/routes"),
                             ("GET", "/v1/connections/x"), ("DELETE", "/v1/users/u/connections"),
                             ("PUT", "/v1/services/s")]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
                async with http.request(method, api + path, headers=headers) as resp:
                    assert resp.status == 401, (method, path, headers)
        async with http.get(f"{api}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"{api}/readyz") as resp:
            assert resp.status == 200


async def test_publish_to_each_target_kind_with_exclude() -> None:
    async with running() as gw, gw.peer("alice") as a1, gw.peer("alice") as a2, gw.peer("bob") as bob, \
            gw.peer("carol", "globex") as carol, aiohttp.ClientSession() as http:
        await a1.join("acme:orders/1")
        await bob.join("acme:orders/1")
        url = f"{gw.node.api_url}/v1/publish"

        async def publish(to: dict[str, str], exclude: str | None = None) -> int:
            body: dict[str, Any] = {"to": to, "action": {"type": "note/NEW", "payload": to}}
            if exclude:
                body["exclude"] = {"connection": exclude}
            async with http.post(url, json=body, headers=AUTH) as resp:
                assert resp.status == 202
                return int((await resp.json())["delivered"])

        assert await publish({"connection": a2.id}) == 1
        assert (await a2.expect("note/NEW"))["payload"] == {"connection": a2.id}
        assert await publish({"user": "alice"}, exclude=a1.id) == 1
        await a2.expect("note/NEW")
        assert await publish({"channel": "acme:orders/1"}) == 2
        got = await bob.expect("note/NEW")
        assert got["meta"]["channel"] == "acme:orders/1" and got["meta"]["offset"] >= 1
        await a1.expect("note/NEW")
        assert await publish({"hub": "acme"}) == 3
        for p in (a1, a2, bob):
            await p.expect("note/NEW")
        await carol.silent()
        async with http.post(url, json={"to": {"planet": "x"}, "action": {"type": "a"}}, headers=AUTH) as resp:
            assert resp.status == 400
        async with http.post(url, json={"to": {"hub": "acme"}, "action": {"type": "@@wsgate/WELCOME"}}, headers=AUTH) as resp:
            assert resp.status == 400


async def test_connection_status_join_leave_presence_hubs_and_disconnect() -> None:
    async with running() as gw, gw.peer("alice") as alice, gw.peer("carol", "globex") as carol, \
            aiohttp.ClientSession() as http:
        api = gw.node.api_url
        async with http.get(f"{api}/v1/connections/{alice.id}", headers=AUTH) as resp:
            status = await resp.json()
        assert status["userId"] == "alice" and "acme" in status["hubs"] and status["channels"] == []
        async with http.get(f"{api}/v1/connections/n0.nobody", headers=AUTH) as resp:
            assert resp.status == 404
        channel = quote("acme:orders/5", safe="")
        async with http.put(f"{api}/v1/connections/{alice.id}/channels/{channel}", headers=AUTH) as resp:
            assert resp.status == 200
        assert (await alice.expect("@@wsgate/JOINED"))["payload"]["channel"] == "acme:orders/5"
        async with http.put(f"{api}/v1/connections/{carol.id}/channels/{channel}", headers=AUTH) as resp:
            assert resp.status == 403  # the policy holds for server-side joins too
        async with http.get(f"{api}/v1/channels/{channel}/presence", headers=AUTH) as resp:
            presence = await resp.json()
        assert presence["count"] == 1 and presence["members"][0]["userId"] == "alice"
        async with http.get(f"{api}/v1/hubs", headers=AUTH) as resp:
            hubs = {h["hub"]: h for h in await resp.json()}
        assert hubs["acme"]["channels"] == [{"channel": "acme:orders/5", "count": 1}]
        assert hubs["globex"]["connections"] == 1
        async with http.delete(f"{api}/v1/connections/{alice.id}/channels/{channel}", headers=AUTH) as resp:
            assert resp.status == 204
        assert (await alice.expect("@@wsgate/LEFT"))["payload"]["channel"] == "acme:orders/5"
        async with http.delete(f"{api}/v1/connections/{alice.id}/channels/{channel}", headers=AUTH) as resp:
            assert resp.status == 404
        async with http.delete(f"{api}/v1/connections/{alice.id}", headers=AUTH) as resp:
            assert resp.status == 204
        with pytest.raises(ConnectionClosed) as closed:
            await alice.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


async def test_revoking_a_user_closes_every_tab_with_4403() -> None:
    async with running() as gw, gw.peer("mallory") as t1, gw.peer("mallory") as t2, gw.peer("bob") as bob, \
            aiohttp.ClientSession() as http:
        async with http.delete(f"{gw.node.api_url}/v1/users/mallory/connections", headers=AUTH) as resp:
            assert resp.status == 403  # a service key cannot disconnect a user
        async with http.delete(f"{gw.node.api_url}/v1/users/mallory/connections", headers=ADMIN) as resp:
            assert (await resp.json())["disconnected"] == 2
        for tab in (t1, t2):
            with pytest.raises(ConnectionClosed) as closed:
                await tab.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        await bob.send("@@wsgate/PING", {}, id="p")
        await bob.expect("@@wsgate/PONG")


async def test_boto3_management_api_against_at_connections() -> None:
    config = make_config(api={"aws": {"credentials": [{"access_key_id": AKID, "secret_access_key": SECRET_KEY}]}})
    async with running(config) as gw, gw.peer("alice") as alice:
        def client(secret: str = SECRET_KEY) -> Any:
            return boto3.client(
                "apigatewaymanagementapi", endpoint_url=gw.node.api_url, region_name="us-east-1",
                aws_access_key_id=AKID, aws_secret_access_key=secret,
                config=BotoConfig(retries={"max_attempts": 1}),
            )

        aws = client()
        data = b'{"type":"aws/HELLO","payload":{"from":"lambda"}}'
        await asyncio.to_thread(aws.post_to_connection, ConnectionId=alice.id, Data=data)
        assert (await alice.expect("aws/HELLO"))["payload"] == {"from": "lambda"}
        info = await asyncio.to_thread(aws.get_connection, ConnectionId=alice.id)
        assert info["Identity"]["SourceIp"] == "127.0.0.1"
        assert info["ConnectedAt"].year >= 2024
        with pytest.raises(ClientError) as forbidden:
            await asyncio.to_thread(client("wrong-secret").post_to_connection, ConnectionId=alice.id, Data=b"{}")
        assert forbidden.value.response["Error"]["Code"] == "ForbiddenException"
        await asyncio.to_thread(aws.delete_connection, ConnectionId=alice.id)
        with pytest.raises(ConnectionClosed):
            await alice.recv()
        pool = gw.node.gateway.pool  # type: ignore[union-attr]
        await eventually(lambda: alice.id not in pool.connections, what="the close completed")
        with pytest.raises(ClientError) as gone:
            await asyncio.to_thread(aws.post_to_connection, ConnectionId=alice.id, Data=b"{}")
        assert gone.value.response["Error"]["Code"] == "GoneException"
        assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410


async def test_at_connections_checks_the_signed_region_and_service() -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    creds = {"access_key_id": AKID, "secret_access_key": SECRET_KEY}
    config = make_config(api={"aws": {"credentials": [creds], "region": "eu-west-1"}})
    async with running(config) as gw, gw.peer("alice") as alice, aiohttp.ClientSession() as http:
        def client(region: str) -> Any:
            return boto3.client(
                "apigatewaymanagementapi", endpoint_url=gw.node.api_url, region_name=region,
                aws_access_key_id=AKID, aws_secret_access_key=SECRET_KEY,
                config=BotoConfig(retries={"max_attempts": 1}),
            )

        info = await asyncio.to_thread(client("eu-west-1").get_connection, ConnectionId=alice.id)
        assert info["Identity"]["SourceIp"] == "127.0.0.1"
        with pytest.raises(ClientError) as wrong_region:
            await asyncio.to_thread(client("us-east-1").get_connection, ConnectionId=alice.id)
        assert wrong_region.value.response["Error"]["Code"] == "ForbiddenException"
        url = f"{gw.node.api_url}/@connections/{quote(alice.id)}"
        for service, status in (("s3", 403), ("execute-api", 200)):
            request = AWSRequest(method="GET", url=url)
            SigV4Auth(Credentials(AKID, SECRET_KEY), service, "eu-west-1").add_auth(request)
            async with http.get(url, headers=dict(request.headers.items())) as resp:
                assert resp.status == status, service


async def test_at_connections_takes_a_bearer_key_as_documented() -> None:
    async with running() as gw, gw.peer("alice") as alice, aiohttp.ClientSession() as http:
        url = f"{gw.node.api_url}/@connections/{quote(alice.id)}"
        async with http.get(url, headers=AUTH) as resp:
            assert resp.status == 200
            assert (await resp.json())["identity"]["sourceIp"] == "127.0.0.1"
        async with http.post(url, data=b'{"type":"k/HI","payload":{}}', headers=AUTH) as resp:
            assert resp.status == 200
        assert (await alice.expect("k/HI"))["type"] == "k/HI"
        async with http.get(url, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 403
