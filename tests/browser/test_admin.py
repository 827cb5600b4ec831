"""The admin dashboard in the system Chromium, over a real ``wsgate serve``.

Real WebSocket peers (``websockets``' sync client) relay in a channel while
the page, given the admin key, shows nodes, hubs, routes and recent errors,
taps the channel (a relayed action shows within a second, its redacted
field as redacted), publishes to it and disconnects a connection and a user.
Every wait is bounded: Playwright's at 10 s (the tap's at 1 s), a peer's
read at 5 s, the server's start at 20 s.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.helpers import free_port
from tests.servers import ServerProcess, wsgate_serve
from wsgate.auth.cookie import CookieCodec
from wsgate.auth.keyring import KeyRing, new_key
from wsgate.auth.principal import Principal
from wsgate.config import load

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser

ADMIN_KEY = "admin-key/with+base64="  # the characters a subprotocol may not carry raw
SERVICE_KEY = "service-key"
ORIGIN = "http://app.test"
CHANNEL = "acme:orders/42"
TIMEOUT_MS = 10_000
TAP_MS = 1_000
"""A relayed action must show in the page's tap within this."""


class Node:
    def __init__(self, server: ServerProcess, config: Path, api_port: int) -> None:
        self.server = server
        self.api = f"http://127.0.0.1:{api_port}"
        loaded = load(config, env={})
        self.codec = CookieCodec.from_config(loaded.auth, KeyRing.from_config(loaded.auth))

    def peer(self, stack: contextlib.ExitStack, user: str) -> tuple[ClientConnection, str]:
        """A signed-in peer joined to :data:`CHANNEL` (closed with ``stack``), and its id."""
        principal = Principal(sub=user, name=user.title(), org="acme", orgs=("acme",))
        ws = stack.enter_context(connect(f"ws://127.0.0.1:{self.server.port}/ws", origin=ORIGIN,  # type: ignore[arg-type]
                     additional_headers={"Cookie": f"wsgate_session={self.codec.seal(principal)}"},
                     open_timeout=5))
        welcome = json.loads(ws.recv(timeout=5))
        ws.send(json.dumps({"type": "@@wsgate/JOIN", "payload": {"channel": CHANNEL}}))
        expect_action(ws, "@@wsgate/JOINED")
        return ws, str(welcome["payload"]["connectionId"])


def expect_action(ws: ClientConnection, type_: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    for _ in range(200):
        action: dict[str, Any] = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if action["type"] == type_:
            return action
    raise AssertionError(f"no {type_}")


def closed_code(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(200):
            ws.recv(timeout=5)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("admin")
    api_port = free_port()
    config = tmp / "wsgate.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:0"
allowed_origins = ["{ORIGIN}"]
[api]
listen = "127.0.0.1:{api_port}"
keys = ["{SERVICE_KEY}"]
[admin]
keys = ["{ADMIN_KEY}"]
[auth]
keys = ["{new_key()}"]
[presence]
batch_ms = 0
[[relays]]
match = "chat/*"
[[tap.redact]]
match = "chat/*"
fields = ["payload.card"]
[services.orders]
url = "http://127.0.0.1:9/actions"
[[routes]]
match = "orders/*"
service = "orders"
""")
    with wsgate_serve(config) as server:
        yield Node(server, config, api_port)


@pytest.fixture
def page(browser: Browser, node: Node) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{node.api}/admin/")
        yield page
        assert not errors, f"errors in the page: {errors}"
    finally:
        context.close()


def sign_in(page: Page, key: str) -> None:
    page.locator("#key").fill(key)
    page.get_by_role("button", name="Use key").click()


def test_a_service_key_shows_the_refusal_and_no_data(page: Page) -> None:
    from playwright.sync_api import expect

    sign_in(page, SERVICE_KEY)
    expect(page.locator("#status")).to_contain_text("403")
    expect(page.locator("#main")).to_be_hidden()


def test_the_dashboard_shows_the_node_and_taps_publishes_and_disconnects(
    page: Page, node: Node
) -> None:
    from playwright.sync_api import expect

    with contextlib.ExitStack() as stack:
        alice, alice_id = node.peer(stack, "alice")
        bob, bob_id = node.peer(stack, "bob")
        alice.send(json.dumps({"type": "orders/NEW", "payload": {}}))  # its service is down
        expect_action(alice, "@@wsgate/ERROR")
        sign_in(page, ADMIN_KEY)
        expect(page.locator("#main")).to_be_visible()
        expect(page.locator("#nodes li")).to_have_count(1)
        expect(page.locator("#nodes")).to_contain_text("(this node)")
        hubs = page.locator("#hubs tbody")
        expect(hubs.locator("tr", has_text="acme")).to_contain_text(f"{CHANNEL} (2)")
        routes = page.locator("#routes tbody tr", has_text="orders/*")
        expect(routes).to_contain_text("http://127.0.0.1:9/actions")
        expect(routes).to_contain_text("static")
        expect(page.locator("#errors li").first).to_contain_text("orders")

        # The tap: a relayed action shows within a second, its card redacted.
        hubs.get_by_role("button", name="tap").first.click()
        expect(page.locator("#tap-status")).to_contain_text(f"tapping channel {CHANNEL}")
        alice.send(json.dumps({"type": "chat/SAY", "payload": {"text": "hi", "card": "4111"},
                               "meta": {"channel": CHANNEL}}))
        line = page.locator("#tap li", has_text="chat/SAY")
        expect(line).to_contain_text('"card":"[redacted]"', timeout=TAP_MS)
        expect(line).to_contain_text(f"from alice/{alice_id}")
        expect(line).not_to_contain_text("4111")
        expect_action(bob, "chat/SAY")

        # Publish to the channel from the page.
        page.locator("#publish-target").fill(CHANNEL)
        page.locator("#publish-type").fill("note/HELLO")
        page.locator("#publish-payload").fill('{"n": 1}')
        page.get_by_role("button", name="Publish").click()
        expect(page.locator("#publish-result")).to_have_text("delivered 2")
        assert expect_action(bob, "note/HELLO")["payload"] == {"n": 1}
        expect(page.locator("#tap li", has_text="note/HELLO")).to_have_count(1, timeout=TAP_MS)

        # Disconnect bob's connection from the channel's presence, then alice as a user.
        hubs.get_by_role("button", name=f"{CHANNEL} (2)").click()
        member = page.locator("#members li", has_text=bob_id)
        member.get_by_role("button", name="disconnect", exact=True).click()
        expect(page.locator("#disconnect-result")).to_have_text("disconnected")
        assert closed_code(bob) == 1000
        page.locator("#disconnect-kind").select_option("user")
        page.locator("#disconnect-target").fill("alice")
        page.locator("#disconnect-form").get_by_role("button", name="Disconnect").click()
        expect(page.locator("#disconnect-result")).to_have_text("disconnected 1")
        assert closed_code(alice) == 4403
