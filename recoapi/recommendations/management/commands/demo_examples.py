"""Print ready-to-paste curl lines for a running service, addressed where gunicorn listens (``RECO_BIND``)."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.authtoken.models import Token

from recoapi.catalog.models import Product
from recoapi.catalog.selectors import shopper_random_ids

DEFAULT_BIND = "127.0.0.1:8000"  # gunicorn.conf.py's default for RECO_BIND
GUNICORN_DEFAULT_PORT = 8000
_ANY_HOST = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104  (translated, not bound)


@dataclass(frozen=True)
class Address:
    """How a client reaches the service: a base URL, and the unix socket curl must use (if any)."""

    base_url: str
    unix_socket: str | None = None
    note: str = ""

    @property
    def curl(self) -> str:
        """``curl`` with the options every example needs."""
        return f"curl --unix-socket {shlex.quote(self.unix_socket)}" if self.unix_socket else "curl"


def address_for_bind(bind: str) -> Address:
    """Where a client on this machine reaches a gunicorn bound to ``bind`` (gunicorn's ``--bind`` syntax).

    ``0.0.0.0:8000`` (every interface) is reached at ``http://127.0.0.1:8000``, ``[::]:8000`` at
    ``http://[::1]:8000``, ``unix:/run/reco.sock`` through curl's ``--unix-socket``; a bind without a
    port means gunicorn's 8000.

    Raises:
        CommandError: for an address no URL can be derived from (``fd://``, a bad port).
    """
    bind = bind.strip()
    if bind.startswith("unix:"):
        path = bind[len("unix:"):].removeprefix("//")  # unix:PATH or unix://PATH, as gunicorn reads it
        if not path:
            raise CommandError(f"RECO_BIND={bind!r}: a unix socket bind needs a path, e.g. unix:/run/reco.sock")
        return Address(base_url="http://localhost", unix_socket=path,
                       note="a unix socket: curl reaches it with --unix-socket")
    if bind.startswith("fd://"):
        raise CommandError(f"RECO_BIND={bind!r}: the service listens on an inherited file descriptor; "
                           "give the URL clients use with --base-url")
    hostport = bind.removeprefix("tcp://")
    if hostport.startswith("["):  # [v6]:port
        host, _, rest = hostport[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif hostport.count(":") == 1:
        host, port_text = hostport.split(":")
    else:  # a bare host name or address
        host, port_text = hostport, ""
    try:
        port = int(port_text) if port_text else GUNICORN_DEFAULT_PORT
    except ValueError:
        raise CommandError(f"RECO_BIND={bind!r}: {port_text!r} is not a port number; "
                           "expected HOST:PORT or unix:PATH") from None
    if not 0 < port < 65536:
        raise CommandError(f"RECO_BIND={bind!r}: port {port} is out of range (1-65535)")
    reach = _ANY_HOST.get(host, host)
    note = f"RECO_BIND={bind} listens on every interface" if host in _ANY_HOST else ""
    shown = f"[{reach}]" if ":" in reach else reach
    return Address(base_url=f"http://{shown}:{port}", note=note)


class Command(BaseCommand):
    help = ("Print example curl commands (with real shopper ids and the staff token) for the API, addressed "
            "where gunicorn listens (RECO_BIND).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base-url", default=None,
                            help="Where the API is reached (default: derived from RECO_BIND, as gunicorn binds).")
        parser.add_argument("--username", default="admin", help="Staff user whose token the POST examples use.")
        parser.add_argument("--banner", action="store_true",
                            help="Start with the 'Serving on ...' line that `make demo` shows.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["base_url"]:
            try:
                parts = urlsplit(options["base_url"])
                port_ok = parts.port is None or parts.port > 0  # reading the port checks it (0 to 65535)
            except ValueError:  # an unclosed IPv6 bracket, a port that is no number or past 65535
                port_ok = False
            if not port_ok or parts.scheme not in ("http", "https") or not parts.netloc:
                raise CommandError(f"--base-url must be an http:// or https:// URL with a host, such as "
                                   f"http://shop.example:8000, got {options['base_url']!r}")
            address = Address(base_url=options["base_url"].rstrip("/"))
        else:
            address = address_for_bind(os.environ.get("RECO_BIND") or DEFAULT_BIND)
        base, curl = address.base_url, address.curl
        users = shopper_random_ids(n=2, seed=0) or ["A0000001"]
        item = Product.objects.order_by("id").values_list("id", flat=True).first() or "B000000001"
        user = get_user_model().objects.filter(username=options["username"]).first()
        token = Token.objects.filter(user=user).values_list("key", flat=True).first() if user else None
        token = token or (f"<token: there is no user {options['username']!r}; `python manage.py create_staff_user` "
                          "makes one>" if user is None else "<token from `python manage.py create_staff_user`>")
        lines = []
        if options["banner"]:
            where = address.unix_socket or base
            lines.append(f"==> Serving on {where} (Ctrl-C to stop{f'; {address.note}' if address.note else ''}). Try:")
        lines += [
            f"{curl} '{base}/health'",
            f"{curl} '{base}/random_users?n=5'",
            f"{curl} '{base}/check_users?users={users[0]},someone-new'",
            f"{curl} '{base}/recommendations?users={','.join(users)},someone-new&k=5'",
            f"{curl} -H 'Authorization: Token {token}' "  # a shopper's own events: with a token
            f"'{base}/recommendations?users={users[0]}&k=5&include_history=true&max_price=100'",
            f"{curl} '{base}/recommendations?text=espresso%20coffee%20grinder&k=5'",
            f"{curl} '{base}/recommendations?items={item}&k=5'",
            f"{curl} '{base}/similar_items?item={item}&k=5'",
            f"{curl} -X POST -H 'Authorization: Token {token}' -H 'Content-Type: application/json' "
            f"-d '{{\"user\": \"someone-new\", \"item\": \"{item}\", \"event\": \"view\"}}' '{base}/events'",
            f"{curl} -X POST -H 'Authorization: Token {token}' '{base}/reload_model'",
            f"{curl} -X POST -H 'Authorization: Token {token}' '{base}/reload_data'",
        ]
        if address.unix_socket:
            lines.append(f"# Swagger UI (/api/docs) and admin (/admin/) open in a browser through a web server "
                         f"(e.g. nginx) that proxies to {address.unix_socket}")
        else:
            lines.append(f"# Swagger UI: {base}/api/docs   Admin: {base}/admin/")
        self.stdout.write("\n".join(lines))
