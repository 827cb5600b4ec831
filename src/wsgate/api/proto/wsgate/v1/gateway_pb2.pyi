from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Target(_message.Message):
    __slots__ = ("connection", "user", "channel", "hub")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    HUB_FIELD_NUMBER: _ClassVar[int]
    connection: str
    user: str
    channel: str
    hub: str
    def __init__(self, connection: _Optional[str] = ..., user: _Optional[str] = ..., channel: _Optional[str] = ..., hub: _Optional[str] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("type", "payload", "error")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    type: str
    payload: str
    error: bool
    def __init__(self, type: _Optional[str] = ..., payload: _Optional[str] = ..., error: _Optional[bool] = ...) -> None: ...

class Exclude(_message.Message):
    __slots__ = ("connection",)
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    connection: str
    def __init__(self, connection: _Optional[str] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("to", "action", "exclude", "actions")
    TO_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    to: Target
    action: Action
    exclude: Exclude
    actions: _containers.RepeatedCompositeFieldContainer[Action]
    def __init__(self, to: _Optional[_Union[Target, _Mapping]] = ..., action: _Optional[_Union[Action, _Mapping]] = ..., exclude: _Optional[_Union[Exclude, _Mapping]] = ..., actions: _Optional[_Iterable[_Union[Action, _Mapping]]] = ...) -> None: ...

class PublishReply(_message.Message):
    __slots__ = ("delivered",)
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    delivered: int
    def __init__(self, delivered: _Optional[int] = ...) -> None: ...

class DisconnectRequest(_message.Message):
    __slots__ = ("connection", "user")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    connection: str
    user: str
    def __init__(self, connection: _Optional[str] = ..., user: _Optional[str] = ...) -> None: ...

class DisconnectReply(_message.Message):
    __slots__ = ("disconnected", "forwarded")
    DISCONNECTED_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_FIELD_NUMBER: _ClassVar[int]
    disconnected: int
    forwarded: bool
    def __init__(self, disconnected: _Optional[int] = ..., forwarded: _Optional[bool] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("connection", "channel")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    connection: str
    channel: str
    def __init__(self, connection: _Optional[str] = ..., channel: _Optional[str] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("channel", "count", "forwarded")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_FIELD_NUMBER: _ClassVar[int]
    channel: str
    count: int
    forwarded: bool
    def __init__(self, channel: _Optional[str] = ..., count: _Optional[int] = ..., forwarded: _Optional[bool] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("connection", "channel")
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    connection: str
    channel: str
    def __init__(self, connection: _Optional[str] = ..., channel: _Optional[str] = ...) -> None: ...

class LeaveReply(_message.Message):
    __slots__ = ("forwarded",)
    FORWARDED_FIELD_NUMBER: _ClassVar[int]
    forwarded: bool
    def __init__(self, forwarded: _Optional[bool] = ...) -> None: ...

class PresenceRequest(_message.Message):
    __slots__ = ("channel",)
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    channel: str
    def __init__(self, channel: _Optional[str] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("user_id", "connection_id", "name")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    connection_id: str
    name: str
    def __init__(self, user_id: _Optional[str] = ..., connection_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class PresenceReply(_message.Message):
    __slots__ = ("channel", "count", "members")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    channel: str
    count: int
    members: _containers.RepeatedCompositeFieldContainer[Member]
    def __init__(self, channel: _Optional[str] = ..., count: _Optional[int] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ...) -> None: ...
