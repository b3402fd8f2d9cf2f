"""OpenAPI schema generation: public operations are declared without a security requirement."""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema, except that an operation open to anybody lists no security.

    drf-spectacular lists every authentication scheme plus ``{}`` ("or none") for an ``AllowAny``
    operation; client generators read any non-empty list as "authentication required". A token sent
    to a public operation is still accepted (and throttled per token).
    """

    def get_auth(self) -> list[dict[str, Any]]:
        auths = super().get_auth()  # also registers the security schemes in the components
        return [] if {} in auths else auths
