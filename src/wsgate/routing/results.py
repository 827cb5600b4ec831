"""What a service answers: replies to the caller and publishes to targets.

A ``200`` answer body is ``{"reply": [action, ...], "publish": [{"to": target,
"action": action, "exclude": {"connection": id}?}, ...]}``, both keys
optional. :func:`decode_result` validates it in one msgspec pass:

- every action has a valid ``type`` (the grammar of the wire protocol) that
  does not start with ``@@wsgate/`` (services never speak for the gateway),
  an optional ``payload`` (kept raw, never re-encoded), ``error`` and
  ``meta.channel`` (a valid address); other ``meta`` keys are dropped;
- a target names exactly one of ``connection``, ``user``, ``channel`` (a
  valid address) or ``hub`` (a valid hub id);
- at most :data:`MAX_ACTIONS` replies and as many publishes.

The body of ``POST /v1/publish`` is a :class:`PublishBatch`: the same
target and exclude, with ``action`` or a batch of ``actions``.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from wsgate.protocol.address import is_hub_id, parse_address
from wsgate.protocol.envelope import GATEWAY_PREFIX, NULL, Outbound, OutMeta, valid_type

__all__ = [
    "MAX_ACTIONS",
    "Claims",
    "InvocationResult",
    "Publish",
    "PublishBatch",
    "ResultAction",
    "ResultMeta",
    "Target",
    "decode_result",
]

MAX_ACTIONS: Final = 1000
"""Most replies (and most publishes) one answer may carry."""

ActionType = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_./:@$-]{1,128}$")]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=265)]


class ResultMeta(msgspec.Struct, omit_defaults=True):
    """``meta`` a service may set: the channel the action concerns."""

    channel: str | None = None

    def __post_init__(self) -> None:
        if self.channel is not None and parse_address(self.channel) is None:
            raise ValueError("meta.channel is not a channel address")


class _Action(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The fields of :class:`ResultAction`, its ``type`` not tested: the replies of
    :func:`decode_result`'s first pass, which tests their types itself (no
    ``__post_init__`` call per reply)."""

    type: str
    payload: msgspec.Raw = NULL
    meta: ResultMeta | None = None
    error: bool = False

    def outbound(self) -> Outbound:
        """This action as the gateway delivers it (payload passed through raw).

        Returns a new :class:`Outbound` each call; the caller may set
        ``meta.inReplyTo`` on it.
        """
        channel = self.meta.channel if self.meta is not None else None
        return Outbound(  # type, payload, meta, error: positional, no keyword matching
            self.type,
            None if self.payload == NULL else self.payload,
            OutMeta(channel) if channel is not None else None,
            self.error,
        )


class ResultAction(_Action):
    """An action in a service's answer, validated."""

    type: ActionType

    def __post_init__(self) -> None:
        if self.type.startswith(GATEWAY_PREFIX):
            raise ValueError(f"types starting with {GATEWAY_PREFIX} are the gateway's")


class Target(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """Where a publish goes: exactly one of the four fields is set."""

    connection: Id | None = None
    user: Id | None = None
    channel: Id | None = None
    hub: Id | None = None

    def __post_init__(self) -> None:
        set_ = [v for v in (self.connection, self.user, self.channel, self.hub) if v is not None]
        if len(set_) != 1:
            raise ValueError("a target names exactly one of connection, user, channel, hub")
        if self.channel is not None and parse_address(self.channel) is None:
            raise ValueError("channel is not a channel address")
        if self.hub is not None and not is_hub_id(self.hub):
            raise ValueError("hub is not a hub id")

    @property
    def kind(self) -> str:
        """``"connection"``, ``"user"``, ``"channel"`` or ``"hub"``."""
        for name in ("connection", "user", "channel"):
            if getattr(self, name) is not None:
                return name
        return "hub"

    @property
    def value(self) -> str:
        """The id or address of the one field set."""
        for value in (self.connection, self.user, self.channel, self.hub):
            if value is not None:
                return value
        raise AssertionError("unreachable: __post_init__ guarantees one is set")


class Publish(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One publish: ``action`` to everyone allowed in ``to``, except ``exclude``."""

    to: Target
    action: ResultAction
    exclude: Target | None = None
    """Only ``{"connection": id}``: skip that connection (usually the sender)."""
    ack: bool = False
    """Ask for a receipt (a connection or a user only): the client acknowledges the
    action, which is sent again until it does (:mod:`wsgate.core.acks`)."""

    def __post_init__(self) -> None:
        if self.exclude is not None and self.exclude.connection is None:
            raise ValueError("exclude names a connection")
        if self.ack and self.to.kind not in ("connection", "user"):
            raise ValueError("ack is for a publish to a connection or a user")


class PublishBatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``POST /v1/publish``: exactly one of ``action`` and ``actions`` (a non-empty batch,
    in order) to everyone allowed in ``to``, except ``exclude``.

    The batch's length is bounded by its caller (:data:`wsgate.api.ops.MAX_BATCH`),
    so that an over-long one is told apart (413) from a malformed one (400).
    """

    to: Target
    action: ResultAction | None = None
    actions: list[ResultAction] | None = None
    exclude: Target | None = None
    """Only ``{"connection": id}``: skip that connection (usually the sender)."""
    ack: bool = False
    """Ask for a receipt, as :attr:`Publish.ack`: one ``action`` only, not a batch."""

    def __post_init__(self) -> None:
        if (self.action is None) == (self.actions is None):
            raise ValueError("give exactly one of action and actions")
        if self.actions is not None and not self.actions:
            raise ValueError("actions is empty")
        if self.ack and self.to.kind not in ("connection", "user"):
            raise ValueError("ack is for a publish to a connection or a user")
        if self.ack and self.actions is not None:
            raise ValueError("ack is for one action, not a batch")
        if self.exclude is not None and self.exclude.connection is None:
            raise ValueError("exclude names a connection")

    @property
    def batch(self) -> list[ResultAction]:
        """The actions in order: ``[action]`` for a single one."""
        if self.actions is not None:
            return self.actions
        assert self.action is not None  # __post_init__: exactly one is set
        return [self.action]


Claim = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class Claims(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Claims a connect hook adds to a session before ``WELCOME``.

    ``roles``, ``teams`` and ``orgs`` are added to the cookie's (never
    removed); ``name`` replaces the display name.
    """

    name: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    roles: Annotated[list[Claim], msgspec.Meta(max_length=64)] = []
    teams: Annotated[list[Claim], msgspec.Meta(max_length=64)] = []
    orgs: Annotated[list[Claim], msgspec.Meta(max_length=64)] = []


class _Answer(msgspec.Struct, forbid_unknown_fields=True):
    reply: Annotated[list[ResultAction], msgspec.Meta(max_length=MAX_ACTIONS)] = []
    publish: Annotated[list[Publish], msgspec.Meta(max_length=MAX_ACTIONS)] = []
    claims: Claims | None = None


class _Quick(_Answer):
    """:class:`_Answer` whose replies' types :func:`decode_result` tests by
    :func:`valid_type` (recent types kept) instead of msgspec's pattern, which looks
    ``re.search`` up by name per string. Any refusal is explained by the strict schema
    (:class:`_Answer`), so the reason is that of one strict pass."""

    reply: Annotated[list[_Action], msgspec.Meta(max_length=MAX_ACTIONS)] = []  # type: ignore[assignment]


class InvocationResult(msgspec.Struct, frozen=True):
    """A successful invocation: what to send back and what to publish."""

    replies: list[Outbound] = msgspec.field(default_factory=list)
    """Actions for the calling connection, in order; set ``meta.inReplyTo``."""
    publishes: list[Publish] = msgspec.field(default_factory=list)
    """Publishes in order; ``publish.action.outbound()`` gives what to deliver."""
    claims: Claims | None = None
    """Only meaningful in a connect hook's answer (see :class:`Claims`)."""


_decoder: Final = msgspec.json.Decoder(_Answer)
_quick: Final = msgspec.json.Decoder(_Quick)


def decode_result(body: bytes) -> InvocationResult | str:
    """Decode a ``200`` answer; return the result, or why it is malformed.

    The reason is for the gateway's log only, never for the client.
    """
    try:
        answer: _Answer | _Quick = _quick.decode(body)
        replies = []
        for reply in answer.reply:  # ResultAction's tests, as the strict pass makes them
            if not valid_type(reply.type) or reply.type.startswith(GATEWAY_PREFIX):
                raise ValueError
            replies.append(reply.outbound())
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError):  # (ValidationError too)
        try:  # refused (rare): the strict schema names the fault
            answer = _decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return str(exc)
        replies = [a.outbound() for a in answer.reply]
    return InvocationResult(replies, answer.publish, answer.claims)
