"""API token authentication: ``Authorization: Token <key>`` and ``Authorization: Bearer <key>``.

Both headers carry the same DRF token (``create_staff_user`` prints it). ``Bearer`` is what
HTTP clients and clients generated from the OpenAPI schema send by default, so the schema
declares it as a standard HTTP bearer scheme next to the ``Token`` one.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import TokenAuthentication


class BearerTokenAuthentication(TokenAuthentication):
    """The DRF token, sent as ``Authorization: Bearer <key>``."""

    keyword = "Bearer"


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Declares :class:`BearerTokenAuthentication` as the OpenAPI ``http``/``bearer`` scheme ``bearerAuth``."""

    target_class = "recoapi.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer",
                "description": "The API token (from create_staff_user), as `Authorization: Bearer <token>`; "
                               "`Authorization: Token <token>` is accepted too."}
