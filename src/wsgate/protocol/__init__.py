"""Wire protocol v1: envelopes, built-in actions, codes, addresses, patterns.

Pure: no asyncio, no I/O. Every other layer may import it.
"""

from __future__ import annotations

from wsgate.protocol.address import Address, parse_address
from wsgate.protocol.codes import CloseCode, ErrorCode, should_reconnect
from wsgate.protocol.envelope import (
    Action,
    DecodeFailure,
    From,
    Meta,
    Outbound,
    OutMeta,
    decode_action,
    encode,
)
from wsgate.protocol.patterns import PatternTable, pattern_matches

__all__ = [
    "Action",
    "Address",
    "CloseCode",
    "DecodeFailure",
    "ErrorCode",
    "From",
    "Meta",
    "OutMeta",
    "Outbound",
    "PatternTable",
    "decode_action",
    "encode",
    "parse_address",
    "pattern_matches",
    "should_reconnect",
]

SUBPROTOCOL = "wsgate.v1.json"
"""The WebSocket subprotocol of v1; a client offering none gets JSON too."""
