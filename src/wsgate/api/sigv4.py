"""AWS Signature Version 4 verification, for the ``@connections`` compatibility paths.

Code written for AWS API Gateway's management API (``boto3.client(
"apigatewaymanagementapi", endpoint_url=...)``) signs each request with SigV4;
the gateway recomputes the signature with the secret of the named access key
(``[api.aws] credentials``) and compares in constant time. Steps and names
follow AWS's "Create a signed AWS API request" (canonical request, string to
sign, derived signing key).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final
from urllib.parse import parse_qsl, quote

__all__ = ["MAX_SKEW_S", "SERVICE", "verify_sigv4"]

MAX_SKEW_S: Final = 15 * 60
"""AWS refuses requests whose ``X-Amz-Date`` is further than this from now."""

_AUTH_RE: Final = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<akid>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request,\s*SignedHeaders=(?P<headers>[a-z0-9;-]+),\s*"
    r"Signature=(?P<sig>[0-9a-f]{64})"
)


SERVICE: Final = "execute-api"
"""The service name AWS API Gateway's management API is signed for."""


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _canonical_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def verify_sigv4(
    *,
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Mapping[str, str],
    region: str,
    service: str = SERVICE,
    now: float | None = None,
) -> str | None:
    """Check the request's SigV4 signature; return why it fails, or ``None``.

    ``raw_path`` is the path and query as sent (still percent-encoded);
    ``secrets`` maps access key ids to secret keys. The reason is for logs
    and the 403 body; it never includes key material. The credential
    scope's region must be ``region`` (``[api.aws] region``) and its service
    ``service``, as AWS requires: a signature for another region or service
    is refused.
    """
    header = headers.get("Authorization", "")
    m = _AUTH_RE.fullmatch(header.strip())
    if m is None:
        return "missing or malformed SigV4 Authorization header"
    if m["region"] != region:
        return f"credential scope region must be {region}"
    if m["service"] != service:
        return f"credential scope service must be {service}"
    secret = secrets.get(m["akid"])
    if secret is None:
        return "unknown access key id"
    amz_date = headers.get("X-Amz-Date", "")
    try:
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "missing or malformed X-Amz-Date"
    current = datetime.now(UTC).timestamp() if now is None else now
    if abs(current - when.timestamp()) > MAX_SKEW_S or not amz_date.startswith(m["date"]):
        return "request time too skewed"
    signed = m["headers"].split(";")
    if "host" not in signed:
        return "host must be signed"
    lines = []
    for name in signed:
        value = headers.get(name)
        if value is None:
            return f"signed header {name} missing"
        lines.append(f"{name}:{' '.join(value.split())}\n")
    path, _, query = raw_path.partition("?")
    payload_hash = headers.get("X-Amz-Content-Sha256") or hashlib.sha256(body).hexdigest()
    canonical = "\n".join(
        [
            method.upper(),
            quote(path, safe="/~"),
            _canonical_query(query),
            "".join(lines),
            m["headers"],
            payload_hash,
        ]
    )
    scope = f"{m['date']}/{m['region']}/{m['service']}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + secret).encode(), m["date"])
    for part in (m["region"], m["service"], "aws4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, m["sig"]):
        return "signature does not match"
    return None
