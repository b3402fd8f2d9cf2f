"""Input and output serializers of the recommendation API."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings

from modeling.datasets import EVENT_TYPES, ID_COMMA_MESSAGE, WEIGHT_RANGE
from recoapi.recommendations.feedback import EVENTS as ATTRIBUTED_EVENTS

MAX_ID_LENGTH = 128
_SURROGATE = re.compile("[\ud800-\udfff]")


def _checked_ids(ids: list[str], limit: int) -> list[str]:
    """``ids`` without repeats (order kept), after the checks every list of ids gets."""
    if any("\x00" in i for i in ids):  # PostgreSQL cannot even compare such a string
        raise serializers.ValidationError("Null characters are not allowed.")
    if any(not i.isascii() and _SURROGATE.search(i) for i in ids):  # no database can store one (UTF-8 has none)
        raise serializers.ValidationError("Surrogate characters are not allowed.")
    if any(len(i) > MAX_ID_LENGTH for i in ids):
        raise serializers.ValidationError(f"ids are at most {MAX_ID_LENGTH} characters")
    if any("," in i for i in ids):  # a JSON list's: no shopper or product can have one (a GET's are split at them)
        raise serializers.ValidationError(ID_COMMA_MESSAGE)
    ids = list(dict.fromkeys(ids))
    if len(ids) > limit:
        raise serializers.ValidationError(f"at most {limit} ids per request, got {len(ids)}")
    return ids


class CommaSeparatedIds(serializers.CharField):
    """A comma-separated list of ids: ``a,b,c`` -> ``["a", "b", "c"]`` (blanks dropped, order kept, unique)."""

    def __init__(self, *, max_items: int | None = None, **kwargs: Any) -> None:
        self.max_items = max_items
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> list[str]:
        text = super().to_internal_value(data)
        ids = [part.strip() for part in text.split(",") if part.strip()]
        if not ids:
            raise serializers.ValidationError("give at least one id, comma-separated")
        return _checked_ids(ids, self.max_items or settings.RECO_MAX_USERS)


@extend_schema_field({"oneOf": [
    {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
     "minItems": 1, "maxItems": 100},
    {"type": "string", "minLength": 1},
]})
class IdList(serializers.Field):
    """Ids in a JSON body: a list of strings (``["a", "b"]``) or one comma-separated string (``"a,b"``).

    Surrounding blanks are stripped and repeats dropped (order kept); an empty id in a list is an error.
    """

    default_error_messages = {"invalid": "Expected a list of id strings or a comma-separated string."}

    def to_internal_value(self, data: Any) -> list[str]:
        limit = settings.RECO_MAX_USERS
        if isinstance(data, str):
            return CommaSeparatedIds().run_validation(data)
        if not isinstance(data, list) or not all(isinstance(i, str) for i in data):
            self.fail("invalid")
        if not data:
            raise serializers.ValidationError("give at least one id")
        if len(data) > limit:  # counted as sent, repeats included
            raise serializers.ValidationError(f"at most {limit} ids per request, got {len(data)}")
        ids = [i.strip() for i in data]
        if not all(ids):
            raise serializers.ValidationError("ids may not be empty")
        return _checked_ids(ids, limit)

    def to_representation(self, value: Any) -> list[str]:
        return list(value)


class BodyInput(serializers.Serializer):
    """A JSON body object: a field the endpoint does not have is an error naming it, not silently dropped (a
    misspelt ``"timestmap"`` would otherwise store the event at the time of the request)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(str(name) for name in data if name not in self.fields)
            if unknown:
                known = ", ".join(self.fields)
                raise serializers.ValidationError(
                    {name[:64]: f"unknown field; this body's fields are: {known}" for name in unknown[:10]})
        return super().to_internal_value(data)


NO_COMMA = RegexValidator(r"^[^,]*$", ID_COMMA_MESSAGE)
"""Shopper and product ids written through the API hold no comma: a GET lists several in one value, ``users=a,b``."""


class StrictCharField(serializers.CharField):
    """A JSON body string: numbers and booleans are refused, not turned into text."""

    default_error_messages = {"invalid": "Not a valid string.",
                              "number": "Not a valid string; numbers are not read as text: send \"{input}\" (in "
                                        "quotes), not {input}.",
                              "not_text": "Not a valid string: got {kind}."}

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, bool):
            self.fail("not_text", kind=f"{str(data).lower()}, a boolean")
        if isinstance(data, (list, tuple)):
            self.fail("not_text", kind="a list")
        if isinstance(data, Mapping):
            self.fail("not_text", kind="an object")
        if isinstance(data, (int, float)):
            self.fail("number", input=str(data)[:64])
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON body boolean: only ``true`` or ``false`` (not 0/1 or "yes")."""

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):
            return data
        self.fail("invalid", input=data)
        return False  # not reached: fail() raises


class StrictIntegerField(serializers.IntegerField):
    """A JSON body integer: ``"5"``, ``5.0`` and booleans are refused."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """A JSON body number: strings and booleans are refused."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        return super().to_internal_value(data)


_OFFSET_MINUTES = re.compile(r"T.*[+-]\d{2}:?(\d{2})$")
"""The minutes of a date and time's offset from UTC (``+01:30``, ``-0500``)."""


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date and time with its time zone (``Z`` or an offset): one without was read as UTC, so a shop
    sending its local time stored every event hours off (or had it refused as before its list, or in the future)."""

    default_error_messages = {"naive": "Give the time zone: {input!r} has none (Z for UTC, or an offset such as "
                                       "+01:00 or -05:00); a time without one is not read as UTC or as any zone.",
                              "impossible": "{input!r} is written as a date and time but is none: {reason}."}

    def to_internal_value(self, value: Any) -> datetime:
        if isinstance(value, str):
            offset = _OFFSET_MINUTES.search(value.strip())
            if offset and int(offset.group(1)) >= 60:  # read as more hours by the parser's fallback: +01:99 as +02:39
                self.fail("impossible", input=value[:64], reason="the minutes of its offset must be under 60")
            try:
                parsed = parse_datetime(value.strip())
            except ValueError as exc:  # the shape of one, not a real one: 30 February, an offset of 25 hours
                reason = "its offset must be under 24 hours" if str(exc).startswith("offset") else str(exc)
                self.fail("impossible", input=value[:64], reason=reason)
            if parsed is not None and parsed.tzinfo is None:
                self.fail("naive", input=value)
        return super().to_internal_value(value)


IGNORED_QUERY = frozenset({api_settings.URL_FORMAT_OVERRIDE, "_"})
"""Query parameters every read endpoint accepts besides its own: DRF's ``format``, and ``_``, the cache-buster
that browser clients add to a GET (jQuery's ``cache: false``)."""


def refuse_query_on_body(query: Any) -> None:
    """Raise ValidationError (400) for query parameters sent to an endpoint that reads a JSON body (``format`` and
    ``_`` aside): ``POST /recommendations?k=50`` answered 10, silently, as the body holds the parameters."""
    _refuse_query_names(query.keys(),
                        lambda: "a query parameter; this endpoint reads its parameters from the JSON body")


def _refuse_query_names(names: Any, message: Callable[[], str]) -> None:
    """Raise ValidationError naming each of ``names`` but ``format`` and ``_`` (:data:`IGNORED_QUERY`; ten at most,
    each cut to 64 characters) with ``message()`` (made only then); nothing when none is left."""
    refused = sorted(str(name) for name in names if name not in IGNORED_QUERY)
    if refused:
        said = message()
        raise serializers.ValidationError(
            {(name[:64] or "(a parameter without a name)"): said for name in refused[:10]})


class QueryInput(serializers.Serializer):
    """Query-string input: a parameter given with an empty value (``?n=``) is an error, not "use the default".

    :func:`validated_query` is how views read it: a subclass may define ``plain_query``, a fast path for the
    most common well-formed queries that gives the serializer's ``validated_data`` without building it.
    """

    #: The parameters the fast path understands.
    PLAIN_PARAMETERS: frozenset[str] = frozenset()

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if hasattr(data, "keys"):  # a misspelt ``max_prcie=10`` would otherwise answer the unfiltered list
            _refuse_query_names([name for name in data.keys() if name not in self.fields],
                                lambda: "unknown parameter; this endpoint's parameters are: "
                                        + ", ".join([*self.fields, api_settings.URL_FORMAT_OVERRIDE]))
        # A QueryDict keeps every value of a repeated parameter, and reading it gives the last one: ``users=a&users=b``
        # would answer b alone, silently.
        repeated = [name for name in self.fields if hasattr(data, "getlist") and len(data.getlist(name)) > 1]
        if repeated:
            raise serializers.ValidationError({name: "given more than once; give it once" + (
                " (several ids go in one value, comma-separated: users=a,b)" if name in ("users", "items") else "")
                for name in repeated})
        blank = [name for name in self.fields if hasattr(data, "get") and data.get(name) == ""]
        if blank:
            raise serializers.ValidationError({name: "may not be empty; leave the parameter out instead"
                                               for name in blank})
        return super().to_internal_value(data)

    @classmethod
    def plain_query(cls, params: dict[str, str]) -> dict[str, Any] | None:
        """The validated data of ``params`` (one value per name), or None to let the serializer decide."""
        return None


def validated_query(serializer: type[QueryInput], params: Any) -> dict[str, Any]:
    """The validated parameters of a query string (a Django ``QueryDict``).

    A query that the serializer's fast path accepts (only known parameters, each once, ASCII values of the
    usual forms: ``users=a,b&k=10``) is answered by it; anything else, every error included, goes through the
    serializer, whose answers and error messages are the API's contract. The fast path gives exactly the
    serializer's ``validated_data`` for what it accepts (tests compare the two on generated queries); it saves
    most of a read request's validation time (benchmarks/request_path.py).

    Raises:
        ValidationError: as ``serializer(data=params).is_valid(raise_exception=True)``.
    """
    if len(params) <= len(serializer.PLAIN_PARAMETERS) and params.keys() <= serializer.PLAIN_PARAMETERS:
        single = {}
        for name, values in params.lists():
            if len(values) != 1 or not values[0].isascii():
                break
            single[name] = values[0]
        else:
            plain = serializer.plain_query(single)
            if plain is not None:
                return plain
    checked = serializer(data=params)
    checked.is_valid(raise_exception=True)
    return checked.validated_data


def _plain_ids(text: str | None, limit: int) -> list[str] | None:
    """``a,b,c`` as CommaSeparatedIds reads it, or None when it would need a closer look (or refuse it)."""
    if not text:
        return None
    ids = [part.strip() for part in text.split(",")]
    if "" in ids:  # blanks are dropped by the serializer: let it do that
        return None
    try:
        return _checked_ids(ids, limit)  # the same checks as the serializer's; their refusals are its to word
    except serializers.ValidationError:
        return None


def _plain_count(text: str | None, default: int, high: int) -> int | None:
    """A count between 1 and ``high`` written as digits, ``default`` when absent; None otherwise."""
    if text is None:
        return default
    if not text.isdigit() or len(text) > 4:
        return None
    value = int(text)
    return value if 1 <= value <= high else None


class RandomUsersInput(QueryInput):
    n = serializers.IntegerField(min_value=1, max_value=100, default=5)


class RandomUsersOutput(serializers.Serializer):
    users = serializers.ListField(child=serializers.CharField())


class CheckUsersInput(QueryInput):
    users = CommaSeparatedIds(help_text="Comma-separated shopper ids (at most 100).")

    PLAIN_PARAMETERS = frozenset({"users"})

    @classmethod
    def plain_query(cls, params: dict[str, str]) -> dict[str, Any] | None:
        users = _plain_ids(params.get("users"), settings.RECO_MAX_USERS)
        return None if users is None else {"users": users}


#: OpenAPI schema of the check_users answer ``{"<shopper id>": true | false, ...}`` (one entry per distinct id).
CHECK_USERS_OUTPUT = {"type": "object", "additionalProperties": {"type": "boolean"},
                      "description": "For each shopper id asked about: whether the service knows it."}


EXPLAIN_HELP = ("Give each item its reason: the shopper's product it comes from (the history product contributing "
                "most to its item-item score, else the one whose text is nearest), or that it is popular.")


class RecommendationsInput(QueryInput):
    users = CommaSeparatedIds(required=False, help_text="Comma-separated shopper ids (at most 100).")
    items = CommaSeparatedIds(required=False, help_text="Anonymous visitor: recently viewed product ids.")
    text = serializers.CharField(required=False, max_length=1000,
                                 help_text="Anonymous visitor: a search query or a description of what they want.")
    k = serializers.IntegerField(min_value=1, max_value=100, default=10)
    category = serializers.CharField(required=False, max_length=512,
                                     help_text="Only products whose category path starts with this, ignoring case "
                                               "(`sports` matches `Sports > Swimming`). When no product's "
                                               "category does: 404 `unknown_category`, whose message lists "
                                               "the top-level categories.")
    min_price = serializers.FloatField(required=False, min_value=0)
    max_price = serializers.FloatField(required=False, min_value=0)
    exclude_seen = serializers.BooleanField(default=True,
                                            help_text="Leave out products the shopper already interacted with.")
    include_history = serializers.BooleanField(default=False, help_text="Add each shopper's recent history.")
    explain = serializers.BooleanField(default=False, help_text=EXPLAIN_HELP)

    PLAIN_PARAMETERS = frozenset({"users", "k"})

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return _validate_recommendation_request(attrs)

    @classmethod
    def plain_query(cls, params: dict[str, str]) -> dict[str, Any] | None:
        users = _plain_ids(params.get("users"), settings.RECO_MAX_USERS)
        k = _plain_count(params.get("k"), 10, 100)
        if users is None or k is None:
            return None
        return {"users": users, "k": k, "exclude_seen": True, "include_history": False, "explain": False}


def _validate_recommendation_request(attrs: dict[str, Any]) -> dict[str, Any]:
    """The rules between parameters of a recommendation request (query string or body)."""
    if not (attrs.get("users") or attrs.get("items") or attrs.get("text")):
        raise serializers.ValidationError("give users, or items and/or text for an anonymous visitor")
    low, high = attrs.get("min_price"), attrs.get("max_price")
    if low is not None and high is not None and low > high:
        raise serializers.ValidationError("min_price is above max_price")
    return attrs


class RecommendationsBodyInput(BodyInput):
    """The body of POST /recommendations: the parameters of GET /recommendations as a JSON object."""

    users = IdList(required=False, help_text="Shopper ids (at most 100): a list, or one comma-separated string.")
    items = IdList(required=False, help_text="Anonymous visitor: recently viewed product ids.")
    text = StrictCharField(required=False, max_length=1000,
                           help_text="Anonymous visitor: a search query or a description of what they want.")
    k = StrictIntegerField(min_value=1, max_value=100, default=10)
    category = StrictCharField(required=False, max_length=512,
                               help_text="Only products whose category path starts with this.")
    min_price = StrictFloatField(required=False, min_value=0)
    max_price = StrictFloatField(required=False, min_value=0)
    exclude_seen = StrictBooleanField(default=True,
                                      help_text="Leave out products the shopper already interacted with.")
    include_history = StrictBooleanField(default=False, help_text="Add each shopper's recent history.")
    explain = StrictBooleanField(default=False, help_text=EXPLAIN_HELP)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return _validate_recommendation_request(attrs)


class ReasonOutput(serializers.Serializer):
    """Why an item is recommended (``explain=true``)."""

    kind = serializers.ChoiceField(choices=["history", "popular", "text", "model"],
                                   help_text="history: it comes from one of the shopper's products (item_id); "
                                             "popular: popular now; text: nearest to the visitor's text; model: "
                                             "from the shopper's trained profile (no product of theirs is known).")
    item_id = serializers.CharField(required=False, help_text="The shopper's product it comes from.")
    title = serializers.CharField(required=False)


class ItemOutput(serializers.Serializer):
    item_id = serializers.CharField()
    score = serializers.FloatField()
    title = serializers.CharField()
    brand = serializers.CharField()
    category = serializers.CharField()
    price = serializers.FloatField(allow_null=True)
    position = serializers.IntegerField(required=False, help_text="1 for the first.")
    reason = ReasonOutput(required=False, help_text="Only with explain=true.")


class HistoryOutput(serializers.Serializer):
    item_id = serializers.CharField()
    event = serializers.CharField()
    timestamp = serializers.DateTimeField()
    title = serializers.CharField()


class ExperimentOutput(serializers.Serializer):
    name = serializers.CharField(help_text="The running experiment (A/B test).")
    arm = serializers.CharField(help_text="The arm this shopper is in, for the experiment's whole life.")
    model_version = serializers.CharField(help_text="The model that answered this list.")


class UserRecommendationsOutput(serializers.Serializer):
    recommendation_id = serializers.CharField(help_text="Send it with the events of these products (POST /events): "
                                                        "they are attributed to this list.")
    strategy = serializers.ChoiceField(choices=["two_tower", "content", "popular"])
    items = ItemOutput(many=True)
    history = HistoryOutput(many=True, required=False)
    experiment = ExperimentOutput(required=False, help_text="Only while an experiment runs (never for visitors).")


class RecommendationsOutput(serializers.Serializer):
    model_version = serializers.CharField()
    recommendations = serializers.DictField(child=UserRecommendationsOutput())


class SimilarItemsInput(QueryInput):
    item = serializers.CharField(max_length=128)
    k = serializers.IntegerField(min_value=1, max_value=100, default=10)

    PLAIN_PARAMETERS = frozenset({"item", "k"})

    @classmethod
    def plain_query(cls, params: dict[str, str]) -> dict[str, Any] | None:
        item = params.get("item")
        k = _plain_count(params.get("k"), 10, 100)
        if not item or len(item) > 128 or item != item.strip() or "\x00" in item or k is None:
            return None
        return {"item": item, "k": k}


class SimilarItemsOutput(serializers.Serializer):
    model_version = serializers.CharField()
    item_id = serializers.CharField()
    recommendation_id = serializers.CharField(help_text="Send it with the events of these products (POST /events): "
                                                        "they are attributed to this list, whoever the shopper is.")
    items = ItemOutput(many=True)


class EventInput(BodyInput):
    user = StrictCharField(max_length=128, validators=[NO_COMMA])
    item = StrictCharField(max_length=128, validators=[NO_COMMA])
    event = serializers.ChoiceField(choices=list(EVENT_TYPES), error_messages={
        "invalid_choice": f'"{{input}}" is not an event kind; the kinds are {", ".join(EVENT_TYPES)}.'})
    timestamp = AwareDateTimeField(
        required=False, allow_null=True,
        help_text="When it happened (ISO 8601 with its time zone: Z or an offset); default now.",
        error_messages={"invalid": "Expected a date and time in ISO 8601, such as \"2026-12-05T09:30:00Z\" (an offset "
                                   "or Z gives the time zone); unix seconds are not read here."})
    # The optional fields take null as left out: many clients' serializers write every field, null when unset.
    weight = StrictFloatField(required=False, allow_null=True, min_value=WEIGHT_RANGE[0], max_value=WEIGHT_RANGE[1])
    rating = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=5)
    text = StrictCharField(required=False, allow_null=True, max_length=5000)
    event_id = StrictCharField(
        required=False, allow_null=True, max_length=64,
        help_text="The client's id of this event: sent again (a retry), it is stored once and the answer says so.")
    recommendation_id = StrictCharField(
        required=False, allow_null=True,
        # the pattern says all: a length check beside it repeated the message in other words
        validators=[RegexValidator(r"^[0-9a-f]{32}$", "Expected the recommendation_id of a recommendations or "
                                                      "similar_items answer (32 lowercase hex digits).")],
        help_text="The recommendation_id of the list that showed this product, with a view, cart or purchase: the "
                  "event is attributed to it (refused with a review or a rating).")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("event") == "rating" and attrs.get("rating") is None:
            raise serializers.ValidationError({"rating": "a rating event needs its rating (0 to 5)"})
        if attrs.get("recommendation_id") and attrs.get("event") not in ATTRIBUTED_EVENTS:
            raise serializers.ValidationError({"recommendation_id": (
                f"a {attrs.get('event')} event is not attributed to a list: only {', '.join(ATTRIBUTED_EVENTS[:-1])} "
                f"and {ATTRIBUTED_EVENTS[-1]} events take a recommendation_id; send this one without it.")})
        return attrs


class EventOutput(serializers.Serializer):
    user = serializers.CharField(source="shopper_id")
    item = serializers.CharField(source="product_id")
    event = serializers.CharField()
    timestamp = serializers.DateTimeField(source="occurred_at")
    weight = serializers.FloatField()
    rating = serializers.FloatField(allow_null=True)  # as stored: a client could not confirm them
    text = serializers.CharField(allow_null=True)
    event_id = serializers.CharField(allow_null=True)
    recommendation_id = serializers.CharField(allow_null=True)
    duplicate = serializers.SerializerMethodField(
        help_text="True: this event id was stored before and nothing was added (the stored event is shown).")

    @extend_schema_field(serializers.BooleanField())
    def get_duplicate(self, obj: Any) -> bool:
        return bool(self.context.get("duplicate", False))


class EventBatchOutput(serializers.Serializer):
    received = serializers.IntegerField()
    stored = serializers.IntegerField()
    duplicates = serializers.IntegerField(help_text="Events whose event_id was stored before (or earlier in the list)")
    duplicate_event_ids = serializers.ListField(child=serializers.CharField())


class ReloadModelInput(BodyInput):
    version = StrictCharField(required=False, max_length=64)  # 123 was read as the version "123"


class ReloadModelOutput(serializers.Serializer):
    model_version = serializers.CharField()
    previous_version = serializers.CharField(allow_null=True)


class ProductInput(BodyInput):
    id = StrictCharField(max_length=128, validators=[NO_COMMA])
    title = StrictCharField(required=False, allow_blank=True, max_length=1000)
    description = StrictCharField(required=False, allow_blank=True, max_length=20000)
    brand = StrictCharField(required=False, allow_blank=True, max_length=255)
    category = StrictCharField(required=False, allow_blank=True, max_length=512,
                               help_text="Breadcrumb path, levels separated by ' > '.")
    price = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=1e9)
    available = StrictBooleanField(required=False, help_text="False: never recommended from the next request on.")


class ProductOutput(serializers.Serializer):
    id = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    brand = serializers.CharField()
    category = serializers.CharField()
    price = serializers.FloatField(allow_null=True)
    available = serializers.BooleanField()
    created = serializers.SerializerMethodField(help_text="True: a new product; false: an update.")

    @extend_schema_field(serializers.BooleanField())
    def get_created(self, obj: Any) -> bool:
        return obj.id in self.context.get("created", ())


class ProductBatchOutput(serializers.Serializer):
    received = serializers.IntegerField()
    created = serializers.IntegerField()
    updated = serializers.IntegerField()


class ReloadDataInput(BodyInput):
    force = StrictBooleanField(default=False)
    replace = StrictBooleanField(default=False, help_text="Remove products and shoppers not in the data.")
    merge = StrictBooleanField(default=False, help_text="Keep them even when the data looks like another shop.")


class ReloadDataOutput(serializers.Serializer):
    source = serializers.CharField()
    path = serializers.CharField()
    skipped = serializers.BooleanField()
    counts = serializers.DictField(child=serializers.IntegerField())
    report = serializers.DictField(child=serializers.IntegerField())
    removed = serializers.DictField(child=serializers.IntegerField())
    notes = serializers.ListField(child=serializers.CharField(),
                                  help_text="What the import says in words, e.g. columns of a file it did not read.")


class ModelStoreOutput(serializers.Serializer):
    store = serializers.ChoiceField(choices=["off", "ok", "unreachable"],
                                    help_text="off: one host (models/ACTIVE); else the shared store's state.")
    active_from = serializers.ChoiceField(choices=["file", "database", "cache"],
                                          help_text="Where the active version was read from; cache: this host's "
                                                    "last one (the database could not be read).")
    active_version = serializers.CharField(allow_null=True, help_text="The active version; a host whose "
                                           "model_version differs serves its cached copy.")


class HealthOutput(serializers.Serializer):
    status = serializers.CharField()
    model_version = serializers.CharField(allow_null=True)
    database = serializers.CharField()
    process = serializers.IntegerField()
    model_store = ModelStoreOutput()
    model_error = serializers.CharField(required=False, help_text="Only when the active model version could not be "
                                        "loaded: why (e.g. trained by another version of the service).")
    pending_migrations = serializers.ListField(
        child=serializers.CharField(), required=False,
        help_text="Only after an upgrade whose `manage.py migrate` has not run: this version's migrations the database "
                  "lacks (app.name).")


class ErrorDetail(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    request_id = serializers.CharField(help_text="Also in the X-Request-ID header and in the server's log lines.")


class ErrorOutput(serializers.Serializer):
    error = ErrorDetail()
