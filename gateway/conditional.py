"""Conditional requests and caching headers of the API's reads (RFC 9110 and RFC 9111).

Every successful GET and HEAD carries a strong `ETag`, a hash of the body's bytes (the same body, the same
tag, whichever worker or gateway built it), `Cache-Control` and `Vary: Authorization, Cookie`. An anonymous
read is the same for every visitor: shared caches may keep it but must ask again each time
(`public, max-age=0, must-revalidate`), and that revalidation costs the gateway little with the catalog
cache. A response to anyone signed in (a Bearer token or a session cookie) is theirs alone and is never
stored (`private, no-store`). `If-None-Match` naming the current tag (weak comparison, as RFC 9110 asks for
this header; a list, or `*`) gets 304 without a body. Writes carry no tag and are never answered 304.
"""

from __future__ import annotations

import hashlib
import re

from starlette.responses import Response

PUBLIC = "public, max-age=0, must-revalidate"
PRIVATE = "private, no-store"
VARY = "Authorization, Cookie"
# an entity tag of If-None-Match, weak or strong: the opaque tag is compared, the W/ prefix is not
_TAG = re.compile(r'(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")')


def entity_tag(body: bytes) -> str:
    """The strong entity tag of a body: 128 bits of BLAKE2b, quoted."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def none_match(header: str | None, tag: str) -> bool:
    """Whether If-None-Match (`header`) names `tag`, or is `*`: the read is then answered 304."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    if tag not in header:  # most requests: no need to parse the list
        return False
    return any(found == tag for found in _TAG.findall(header))


def cache_control(authenticated: bool) -> str:
    return PRIVATE if authenticated else PUBLIC


def not_modified(tag: str, authenticated: bool) -> Response:
    """304: no body, and those headers a 200 would have carried that say how to cache it (as RFC 9110 asks
    of a 304)."""
    return Response(
        status_code=304,
        headers={"ETag": tag, "Cache-Control": cache_control(authenticated), "Vary": VARY},
    )
