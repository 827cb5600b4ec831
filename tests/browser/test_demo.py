"""Browser tests: the demo web app and the JS client in the system Chromium.

Each module run starts ``wsgate demo`` on a free port, then drives Chromium
(``/usr/bin/chromium``, never a downloaded browser) through Playwright, one
browser context (one cookie jar) per user. Without Chromium the tests skip,
unless ``CI`` is set, where they fail: CI must install it
(``apt-get install -y chromium``).

Every wait is bounded: Playwright timeouts are 10 s, the server gets 20 s to
answer, and the subprocess is terminated (then killed) at the end.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import free_port
from tests.servers import WSGATE, ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_MS = 10_000
SERVER_START_S = 20.0


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``wsgate demo`` on a free port, as ``http://127.0.0.1:<port>``."""
    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = ServerProcess([*WSGATE, "demo", "--port", str(port)], port, "http", log=log,
                           cwd=REPO, env=env)
    server.start(timeout=SERVER_START_S)
    try:
        yield server.url
    finally:
        server.stop()


SignIn = Callable[[str, str, str], "Page"]


@pytest.fixture
def sign_in(browser: Browser, demo_url: str) -> Iterator[SignIn]:
    """Sign a user in through the form, in a context (cookie jar) of its own.

    Fails the test at teardown if a page logged a script error.
    """
    from playwright.sync_api import expect

    contexts = []
    errors: list[str] = []

    def sign_in(user: str, name: str, org: str) -> Page:
        context = browser.new_context()
        contexts.append(context)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"{user}: {exc}"))
        page.on(
            "console",
            lambda msg: errors.append(f"{user}: {msg.text}") if msg.type == "error" else None,
        )
        page.goto(f"{demo_url}/sign-in")
        page.get_by_test_id("sign-in-user").fill(user)
        page.get_by_test_id("sign-in-name").fill(name)
        page.get_by_test_id("sign-in-org").select_option(org)
        page.get_by_test_id("sign-in-submit").click()
        page.wait_for_url(f"{demo_url}/")
        expect(page.get_by_test_id("status")).to_have_attribute("data-state", "open")
        expect(page.get_by_test_id("me")).to_contain_text(user)
        expect(page.get_by_test_id("me")).to_contain_text(org)
        return page

    try:
        yield sign_in
        assert not errors, f"errors in the page: {errors}"
    finally:
        for context in contexts:
            context.close()


def open_view(page: Page, view: str, channel: str) -> None:
    from playwright.sync_api import expect

    page.get_by_test_id("view-select").select_option(view)
    expect(page.get_by_test_id("channel")).to_have_text(channel)
    expect(page.get_by_test_id("chat-input")).to_be_enabled()


def say(page: Page, text: str) -> None:
    page.get_by_test_id("chat-input").fill(text)
    page.get_by_test_id("chat-send").click()


def members(page: Page, user: str | None = None) -> Any:
    items = page.get_by_test_id("members").locator("li")
    return items if user is None else items.and_(page.locator(f'[data-user="{user}"]'))


def chat(page: Page, text: str | None = None) -> Any:
    items = page.get_by_test_id("chat-log").locator("li")
    return items if text is None else items.filter(has_text=text)


def test_signed_out_visit_goes_to_sign_in(browser: Browser, demo_url: str) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{demo_url}/")
        assert page.url == f"{demo_url}/sign-in"
        assert page.get_by_test_id("sign-in-form").is_visible()
    finally:
        context.close()


def test_members_chat_and_leave(sign_in: SignIn) -> None:
    from playwright.sync_api import expect

    alice = sign_in("alice", "Alice", "acme")
    bob = sign_in("bob", "Bob", "acme")
    open_view(alice, "orders/42", "acme:orders/42")
    open_view(bob, "orders/42", "acme:orders/42")

    # Each sees the other (JOINED for the later one, PRESENCE for the earlier).
    expect(members(alice, "bob")).to_have_count(1)
    expect(members(bob, "alice")).to_have_count(1)
    expect(members(alice, "bob")).to_contain_text("Bob")

    # Alice's message reaches Bob with Alice as its sender...
    say(alice, "hello bob")
    message = chat(bob, "hello bob")
    expect(message).to_have_count(1)
    expect(message).to_have_attribute("data-from", "alice")
    expect(message).to_contain_text("Alice")
    # ...and is shown once to Alice. Bob's answer comes after any echo of it
    # would have, so once Alice has the answer, the count is final.
    say(bob, "hi alice")
    expect(chat(alice, "hi alice")).to_have_count(1)
    expect(chat(alice, "hello bob")).to_have_count(1)
    expect(chat(bob, "hi alice")).to_have_count(1)

    # Bob moves to another view: Alice sees him leave.
    open_view(bob, "orders/43", "acme:orders/43")
    expect(members(alice, "bob")).to_have_count(0)
    expect(members(alice)).to_have_count(1)
    expect(members(bob, "alice")).to_have_count(0)
    expect(members(bob, "bob")).to_have_count(1)


def test_nickname_changes_are_limited_to_one_a_minute(sign_in: SignIn) -> None:
    from playwright.sync_api import expect

    nina = sign_in("nina", "Nina", "acme")
    omar = sign_in("omar", "Omar", "acme")
    open_view(nina, "orders/45", "acme:orders/45")
    open_view(omar, "orders/45", "acme:orders/45")
    expect(members(omar, "nina")).to_have_count(1)
    nina.get_by_test_id("nick-input").fill("Captain")
    nina.get_by_test_id("nick-send").click()
    expect(members(omar, "nina")).to_contain_text("Captain")  # relayed to the view
    nina.get_by_test_id("nick-input").fill("Admiral")
    nina.get_by_test_id("nick-send").click()
    expect(nina.get_by_test_id("nick-status")).to_have_attribute("data-state", "limited")
    expect(nina.get_by_test_id("nick-status")).to_contain_text("try again in")
    expect(members(omar, "nina")).to_contain_text("Captain")  # the refused one never left


def test_orders_service_replies_publishes_and_pushes_later(sign_in: SignIn) -> None:
    from playwright.sync_api import expect

    pia = sign_in("pia", "Pia", "acme")
    quinn = sign_in("quinn", "Quinn", "acme")
    open_view(pia, "orders/46", "acme:orders/46")
    open_view(quinn, "orders/46", "acme:orders/46")
    expect(pia.get_by_test_id("order-id")).to_have_text("46")
    pia.get_by_test_id("order-get").click()
    expect(pia.get_by_test_id("order-status")).to_have_text("order 46: new")
    pia.get_by_test_id("order-pack").click()
    expect(pia.get_by_test_id("order-status")).to_have_text("order 46: packed")
    expect(quinn.get_by_test_id("order-status")).to_have_text("Pia marked order 46 packed")
    quinn.get_by_test_id("order-watch").click()
    expect(quinn.get_by_test_id("order-status")).to_contain_text("watching")
    expect(quinn.get_by_test_id("order-status")).to_have_text("reminder: order 46 is packed")


def test_other_organization_sees_nothing(sign_in: SignIn) -> None:
    from playwright.sync_api import expect

    dave = sign_in("dave", "Dave", "acme")
    erin = sign_in("erin", "Erin", "acme")
    carol = sign_in("carol", "Carol", "globex")
    open_view(dave, "orders/42", "acme:orders/42")
    open_view(erin, "orders/42", "acme:orders/42")
    # The same view name in another organization is another channel.
    open_view(carol, "orders/42", "globex:orders/42")

    say(carol, "globex only")
    say(dave, "acme only")
    expect(chat(erin, "acme only")).to_have_count(1)
    say(erin, "acme again")
    expect(chat(dave, "acme again")).to_have_count(1)

    # Both acme messages were delivered; none reached Carol, and hers reached
    # no one in acme.
    expect(chat(carol)).to_have_count(1)
    expect(chat(carol, "globex only")).to_have_count(1)
    expect(chat(dave, "globex only")).to_have_count(0)
    expect(chat(erin, "globex only")).to_have_count(0)
    expect(members(carol)).to_have_count(1)
    expect(members(carol, "carol")).to_have_count(1)
    expect(members(dave, "carol")).to_have_count(0)
    expect(members(dave)).to_have_count(2)


def test_other_organization_sees_none_of_the_order_state(sign_in: SignIn) -> None:
    from playwright.sync_api import expect

    alice = sign_in("alice2", "Alice", "acme")
    carol = sign_in("carol2", "Carol", "globex")
    open_view(alice, "orders/44", "acme:orders/44")
    open_view(carol, "orders/44", "globex:orders/44")
    alice.get_by_test_id("order-pack").click()
    expect(alice.get_by_test_id("order-status")).to_have_text("order 44: packed")
    carol.get_by_test_id("order-get").click()
    expect(carol.get_by_test_id("order-status")).to_have_text("order 44: new")
    carol.get_by_test_id("order-watch").click()
    expect(carol.get_by_test_id("order-status")).to_have_text("reminder: order 44 is new")
    alice.get_by_test_id("order-get").click()
    expect(alice.get_by_test_id("order-status")).to_have_text("order 44: packed")


DISCOVERY_TRIES = 20
"""Refreshes of the Procedures panel while the examples are being discovered (1 s each)."""


def discovered(page: Page, *rows: tuple[str, str]) -> None:
    """Refresh the Procedures panel until it lists each ``(source, type)`` (bounded)."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect

    table = page.get_by_test_id("procedure-list")
    wanted = [table.locator(f'tr[data-source="{src}"][data-type="{typ}"]') for src, typ in rows]
    for attempt in range(DISCOVERY_TRIES):
        try:
            for row in wanted:
                expect(row).to_have_count(1, timeout=1000)
            return
        except (AssertionError, PlaywrightError):
            if attempt == DISCOVERY_TRIES - 1:
                raise
            page.get_by_test_id("procedures-refresh").click()


def call_lines(page: Page, kind: str) -> Any:
    return page.get_by_test_id("call-log").locator(f'li[data-kind="{kind}"]')


def test_procedures_panel_lists_grpc_and_nats_and_calls_them(sign_in: SignIn) -> None:
    from playwright.sync_api import expect

    rita = sign_in("rita", "Rita", "acme")
    discovered(
        rita,
        ("grpc", "modules/LIST"),
        ("grpc", "oswee.module.v1.ModuleService/WatchModules"),
        ("nats", "inventory/CHECK"),
    )
    row = rita.locator('tr[data-source="nats"][data-type="inventory/CHECK"]')
    expect(row).to_contain_text("healthy")
    expect(rita.locator('tr[data-source="grpc"][data-type="modules/LIST"]')).to_contain_text(
        "healthy"
    )
    # Unary gRPC: one answer, the alias's reply type.
    rita.get_by_test_id("preset-list").click()
    expect(call_lines(rita, "answer")).to_have_count(1)
    expect(call_lines(rita, "answer")).to_contain_text("modules/LISTED")
    expect(call_lines(rita, "answer")).to_contain_text("Authentication")
    # Server streaming: each message, then END OK.
    rita.get_by_test_id("preset-watch").click()
    expect(call_lines(rita, "end")).to_have_text("END OK", timeout=TIMEOUT_MS)
    expect(call_lines(rita, "answer")).to_have_count(6)
    expect(call_lines(rita, "answer").first).to_contain_text("modules/EVENT")
    # NATS, found over $SRV.INFO: the caller's hub's stock.
    rita.get_by_test_id("preset-stock").click()
    expect(call_lines(rita, "answer")).to_contain_text('"hub":"acme"')
    expect(call_lines(rita, "answer")).to_contain_text("inventory/STOCK")


def test_procedures_stream_is_cancelled_from_the_panel(sign_in: SignIn) -> None:
    from playwright.sync_api import expect

    sam = sign_in("sam", "Sam", "acme")
    discovered(sam, ("grpc", "modules/WATCH"))
    sam.get_by_test_id("call-type").fill("modules/WATCH")
    sam.get_by_test_id("call-payload").fill('{"count": 0, "intervalMs": 200}')
    sam.get_by_test_id("call-send").click()
    expect(call_lines(sam, "answer").first).to_contain_text("modules/EVENT")
    sam.get_by_test_id("call-cancel").click()
    expect(call_lines(sam, "end")).to_have_text("END CANCELLED")


def test_procedures_keep_each_organization_s_stock_apart(sign_in: SignIn) -> None:
    from playwright.sync_api import expect

    tess = sign_in("tess", "Tess", "acme")
    uma = sign_in("uma", "Uma", "globex")
    discovered(tess, ("nats", "inventory/TAKE"))
    discovered(uma, ("nats", "inventory/CHECK"))

    def call(page: Page, type_: str, sku: str) -> None:
        page.get_by_test_id("call-type").fill(type_)
        page.get_by_test_id("call-payload").fill(json.dumps({"sku": sku}))
        page.get_by_test_id("call-send").click()

    call(tess, "inventory/TAKE", "gizmo-iso")
    expect(call_lines(tess, "answer")).to_contain_text('"count":11')
    call(uma, "inventory/CHECK", "gizmo-iso")
    expect(call_lines(uma, "answer")).to_contain_text('"hub":"globex"')
    expect(call_lines(uma, "answer")).to_contain_text('"count":12')


# ---------------------------------------------------------------------------
# The JS client in the page, against a scripted server: reconnect after 1012
# and rejoin with ``since``.


class ScriptedGateway:
    """A tiny wire-protocol server on a thread (the ``websockets`` sync API).

    It welcomes each connection and answers JOIN with JOINED at offset 5. On
    the first connection it then sends an action at offset 6 and closes with
    1012 ("restart"). It records ``(connection number, action)`` received.
    """

    def __init__(self) -> None:
        from websockets.sync.server import serve
        from websockets.typing import Subprotocol

        self.received: list[tuple[int, dict[str, Any]]] = []
        self._numbers = itertools.count(1)
        self._server = serve(
            self._handle, "127.0.0.1", 0, subprotocols=[Subprotocol("wsgate.v1.json")]
        )
        self.port: int = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        number = next(self._numbers)
        welcome = {
            "connectionId": f"t.{number}",
            "userId": "alice",
            "node": "t",
            "hubs": ["system", "acme"],
            "heartbeatMs": 25000,
        }
        try:
            _send(ws, "@@wsgate/WELCOME", welcome)
            for frame in ws:
                action = json.loads(frame)
                self.received.append((number, action))
                if action["type"] != "@@wsgate/JOIN":
                    continue
                channel = action["payload"]["channel"]
                joined = {"channel": channel, "members": [], "count": 1, "offset": 5}
                _send(ws, "@@wsgate/JOINED", joined, inReplyTo=action["meta"]["id"])
                if number == 1:
                    _send(ws, "orders/UPDATE", {"id": 42}, channel=channel, offset=6)
                    ws.close(1012, "restart")
        except ConnectionClosed:
            pass

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


def _send(ws: Any, type_: str, payload: Any, **meta: Any) -> None:
    ws.send(json.dumps({"type": type_, "payload": payload, "meta": meta}))


@pytest.fixture
def scripted_gateway() -> Iterator[ScriptedGateway]:
    gateway = ScriptedGateway()
    try:
        yield gateway
    finally:
        gateway.close()


RECONNECT_SCRIPT = """
async (url) => {
  const { createClient } = await import('/js/wsgate.js');
  const client = createClient({ url, backoff: { minMs: 50, maxMs: 200 } });
  const closes = [];
  client.on('close', (e) => closes.push(e));
  let welcomes = 0;
  const secondWelcome = new Promise((resolve) => client.on('welcome', () => {
    welcomes += 1;
    if (welcomes === 2) resolve();
  }));
  await client.join('acme:orders/42');
  await secondWelcome;
  await new Promise((resolve) => setTimeout(resolve, 100));
  const result = { closes, state: client.state, offset: client.offset('acme:orders/42') };
  client.close();
  return result;
}
"""


def test_client_reconnects_after_1012_and_rejoins_with_since(
    browser: Browser, demo_url: str, scripted_gateway: ScriptedGateway
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{demo_url}/sign-in")  # any page of the origin that serves /js/
        result = page.evaluate(RECONNECT_SCRIPT, f"ws://127.0.0.1:{scripted_gateway.port}/ws")
    finally:
        context.close()

    assert result["closes"][0] == {
        "code": 1012,
        "reason": "restart",
        "willReconnect": True,
        "delayMs": 0,
    }
    assert result["state"] == "open"
    joins = [
        (n, a["payload"]) for n, a in scripted_gateway.received if a["type"] == "@@wsgate/JOIN"
    ]
    assert joins == [
        (1, {"channel": "acme:orders/42"}),
        (2, {"channel": "acme:orders/42", "since": 6}),
    ]
    # The rejoin was answered with offset 5, but the client keeps the 6 it saw.
    assert result["offset"] == 6


# First contact (issue 11, item 6): each of these failed on the demo before its fix.


def test_a_refused_nickname_is_not_shown_as_applied(sign_in: SignIn) -> None:
    from playwright.sync_api import expect

    pia = sign_in("pia", "Pia", "acme")
    open_view(pia, "orders/46", "acme:orders/46")
    pia.get_by_test_id("nick-input").fill("Captain")
    pia.get_by_test_id("nick-send").click()
    expect(members(pia, "pia")).to_contain_text("Captain")  # applied once the relay came back
    pia.get_by_test_id("nick-input").fill("Admiral")
    pia.get_by_test_id("nick-send").click()
    expect(pia.get_by_test_id("nick-status")).to_have_attribute("data-state", "limited")
    expect(members(pia, "pia")).to_contain_text("Captain")
    expect(members(pia, "pia")).not_to_contain_text("Admiral")
    expect(pia.get_by_test_id("me")).not_to_contain_text("Admiral")


def test_a_deep_link_survives_sign_in(browser: Browser, demo_url: str) -> None:
    from playwright.sync_api import expect

    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{demo_url}/#orders/44")
        page.get_by_test_id("sign-in-user").fill("quinn")
        page.get_by_test_id("sign-in-submit").click()
        page.wait_for_url(f"{demo_url}/#orders/44")
        expect(page.get_by_test_id("channel")).to_have_text("acme:orders/44")
    finally:
        context.close()


def test_a_refused_sign_in_has_a_way_back(browser: Browser, demo_url: str) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{demo_url}/sign-in?user=no%20spaces&org=acme")
        page.get_by_role("link", name="Back to sign-in").click()
        page.wait_for_url(f"{demo_url}/sign-in")
        assert page.get_by_test_id("sign-in-form").is_visible()
    finally:
        context.close()


def test_the_nickname_form_fits_its_panel_at_1280_px(sign_in: SignIn) -> None:
    rita = sign_in("rita", "Rita", "acme")
    rita.set_viewport_size({"width": 1280, "height": 800})
    panel = rita.locator("section.profile").bounding_box()
    button = rita.get_by_test_id("nick-send").bounding_box()
    assert panel is not None and button is not None
    assert button["x"] + button["width"] <= panel["x"] + panel["width"], (button, panel)


def test_buttons_are_off_while_reconnecting(browser: Browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    demo = ServerProcess([*WSGATE, "demo", "--port", str(port)], port, "http",
                         log=tmp_path / "demo.log", cwd=REPO, env=env)
    demo.start(timeout=SERVER_START_S)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{demo.url}/sign-in?user=sam&org=acme")
        page.wait_for_url(f"{demo.url}/")
        open_view(page, "orders/42", "acme:orders/42")
        for test_id in ("chat-send", "nick-send", "order-get", "order-pack"):
            expect(page.get_by_test_id(test_id)).to_be_enabled()
        demo.stop()  # the node goes away: the client reconnects
        expect(page.get_by_test_id("status")).to_have_attribute("data-state", "reconnecting")
        for test_id in ("chat-send", "nick-send", "order-get", "order-pack", "order-watch"):
            expect(page.get_by_test_id(test_id)).to_be_disabled()
    finally:
        context.close()
        demo.stop()
