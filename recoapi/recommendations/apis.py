"""HTTP endpoints. Each validates its input, calls one service or selector, returns JSON."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import permissions, serializers
from rest_framework.exceptions import NotAuthenticated, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from recoapi import metrics
from recoapi.catalog import selectors as catalog_selectors
from recoapi.catalog import services as catalog_services
from recoapi.recommendations import model_store, services
from recoapi.recommendations import serializers as s
from recoapi.recommendations.engine import registry
from recoapi.renderers import FastJSONRenderer

_ERRORS = {400: OpenApiResponse(s.ErrorOutput, description="Invalid input"),
           414: OpenApiResponse(s.ErrorOutput, description="Query string too long"),
           429: OpenApiResponse(s.ErrorOutput, description="Too many requests (see Retry-After)"),
           503: OpenApiResponse(s.ErrorOutput, description="No active model, or the database is unavailable")}
_STAFF_ERRORS = {**_ERRORS, 401: OpenApiResponse(s.ErrorOutput, description="Not authenticated"),
                 403: OpenApiResponse(s.ErrorOutput, description="Not staff"),
                 413: OpenApiResponse(s.ErrorOutput, description="Request body too large")}


ANSWER_RAISED = "recoapi.answer_raised"
"""The WSGI environ's key of the exception a read endpoint's answer raised in :mod:`recoapi.fast_lane`, which then
hands the request to Django: the view raises it again rather than answering a second time (the error is answered
as the view's own, and the service's work and side effects are not repeated)."""


def _raise_what_was_raised(request: Request) -> None:
    raised = request.META.pop(ANSWER_RAISED, None)
    if raised is not None:
        raise raised


class BodyApiView(APIView):
    """An endpoint whose POST reads its parameters from a JSON body: a query string on the POST is refused (400)
    once the caller is authenticated, allowed and not throttled, as a GET's unknown parameter is."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if request.method == "POST":
            s.refuse_query_on_body(request.query_params)


class RandomUsersApi(APIView):
    @extend_schema(parameters=[s.RandomUsersInput], responses={200: s.RandomUsersOutput, **_ERRORS})
    def get(self, request: Request) -> Response:
        """Random shopper ids from the database, to try the other endpoints with."""
        data = s.RandomUsersInput(data=request.query_params)
        data.is_valid(raise_exception=True)
        return Response({"users": catalog_selectors.shopper_random_ids(n=data.validated_data["n"])})


class CheckUsersApi(APIView):
    @extend_schema(parameters=[s.CheckUsersInput], responses={200: s.CHECK_USERS_OUTPUT, **_ERRORS})
    def get(self, request: Request) -> Response:
        """For each shopper id: whether the service knows that shopper."""
        ids = s.validated_query(s.CheckUsersInput, request.query_params)["users"]
        known = catalog_selectors.shopper_existing_ids(ids=ids)
        return Response({user: user in known for user in ids})


_HISTORY_NEEDS_TOKEN = OpenApiResponse(s.ErrorOutput, description="include_history, explain or exclude_seen=false for "
                                       "shoppers, without a token")
_NO_PRICES = OpenApiResponse(s.ErrorOutput, description="A price filter, and no product has a price")


class RecommendationsApi(BodyApiView):
    @extend_schema(parameters=[s.RecommendationsInput],
                   responses={200: s.RecommendationsOutput, 404: s.ErrorOutput, **_ERRORS, 401: _HISTORY_NEEDS_TOKEN,
                              422: _NO_PRICES})
    def get(self, request: Request) -> Response:
        """Top-k products per shopper; products a shopper already has are excluded."""
        return Response(self.answer(request, s.validated_query(s.RecommendationsInput, request.query_params)))

    @extend_schema(operation_id="recommendations_post", request=s.RecommendationsBodyInput,
                   responses={200: s.RecommendationsOutput, 404: s.ErrorOutput, **_ERRORS,
                              413: OpenApiResponse(s.ErrorOutput, description="Request body too large"),
                              401: _HISTORY_NEEDS_TOKEN, 422: _NO_PRICES})
    def post(self, request: Request) -> Response:
        """The same as GET /recommendations, with the parameters as a JSON body (for long lists of ids).

        Reads only: open to anybody, like GET.
        """
        data = s.RecommendationsBodyInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(self.answer(request, data.validated_data))

    @staticmethod
    def answer(request: Request, v: dict[str, Any]) -> dict[str, Any]:
        """The answer to validated parameters ``v`` (also :mod:`recoapi.fast_lane`'s).

        Raises:
            NotAuthenticated: parameters that show shoppers' own products, without a token.
        """
        _raise_what_was_raised(request)
        revealing = v["include_history"] or v.get("explain") or not v["exclude_seen"]
        if v.get("users") and revealing and not request.user.is_authenticated:
            # Shoppers' own products (their events, what each item is "because of", or what a list with them differs
            # by from the default one, which leaves them out): not for anyone who knows an id.
            raise NotAuthenticated("include_history, explain and exclude_seen=false show shoppers' own products "
                                   "(exclude_seen=false: by what the list adds to the default one): send a token "
                                   "(Authorization: Token <token>).")
        return services.recommendation_list(
            user_ids=v.get("users", []), k=v["k"], category=v.get("category"), min_price=v.get("min_price"),
            max_price=v.get("max_price"), exclude_seen=v["exclude_seen"], include_history=v["include_history"],
            context_items=v.get("items"), context_text=v.get("text"), explain=v.get("explain", False),
            record=request.method != "HEAD",  # a monitor's HEAD probe shows no shopper anything
        )


class SimilarItemsApi(APIView):
    @extend_schema(parameters=[s.SimilarItemsInput],
                   responses={200: s.SimilarItemsOutput, 404: s.ErrorOutput, **_ERRORS})
    def get(self, request: Request) -> Response:
        """Products nearest to the given product in the candidate-tower space."""
        return Response(self.answer(request, s.validated_query(s.SimilarItemsInput, request.query_params)))

    @staticmethod
    def answer(request: Request, v: dict[str, Any]) -> dict[str, Any]:
        """The answer to validated parameters ``v`` (also :mod:`recoapi.fast_lane`'s)."""
        _raise_what_was_raised(request)
        return services.similar_item_list(item_id=v["item"], k=v["k"], record=request.method != "HEAD")


def _one_or_many(serializer: type[serializers.Serializer], data: Any, name: str, limit: int) -> tuple[bool, list]:
    """Validate a JSON object or a list of at most ``limit`` of them; errors name the list position."""
    many = isinstance(data, list)
    checked = serializer(data=data, many=True, max_length=limit, allow_empty=False) if many else serializer(data=data)
    if not checked.is_valid():
        errors = checked.errors  # a list's errors are keyed by the failing rows' positions, the list's own
        raise ValidationError({f"{name}[{key}]" if isinstance(key, int)
                               else name if key == api_settings.NON_FIELD_ERRORS_KEY  # the list's own: by its name
                               else key: error for key, error in errors.items()} if many else errors)
    return many, checked.validated_data if many else [checked.validated_data]


def _one_or_many_schema(name: str, one: type[serializers.Serializer], output: type[serializers.Serializer],
                        batch_output: type[serializers.Serializer], repeated: str,
                        extra: dict[int, Any] | None = None) -> dict[str, Any]:
    """OpenAPI of a POST taking one object or a list of them (201 on a write, 200 on nothing new)."""
    answer = PolymorphicProxySerializer(component_name=f"{name}OrBatchOutput", serializers=[output, batch_output],
                                        resource_type_field_name=None)
    return {
        "request": PolymorphicProxySerializer(component_name=f"{name}Or{name}s", serializers=[one, one(many=True)],
                                              resource_type_field_name=None, many=False),
        "responses": {201: answer, 200: OpenApiResponse(answer, description=repeated), **(extra or {}),
                      **_STAFF_ERRORS},
    }


class ProductsApi(BodyApiView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(**_one_or_many_schema("Product", s.ProductInput, s.ProductOutput, s.ProductBatchOutput,
                                         "An existing product updated"))
    def post(self, request: Request) -> Response:
        """Create or update products (staff only): one, or a list of at most RECO_PRODUCTS_MAX_BATCH written
        all or none. Fields left out keep their values. Every worker serves the change from its next request:
        a new product is recommendable and has similar items at once (from its text), an unavailable one is
        never recommended."""
        many, rows = _one_or_many(s.ProductInput, request.data, "products", settings.RECO_PRODUCTS_MAX_BATCH)
        result = catalog_services.products_upsert(rows)
        if not many:
            created = bool(result.created)
            return Response(s.ProductOutput(result.products[0], context={"created": set(result.created)}).data,
                            status=201 if created else 200)
        return Response({"received": len(rows), "created": len(result.created),
                         "updated": len(result.products) - len(result.created)},
                        status=201 if result.created else 200)


class EventsApi(BodyApiView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(**_one_or_many_schema("Event", s.EventInput, s.EventOutput, s.EventBatchOutput,
                                         "Already stored: the event id was sent before", {
                                             404: s.ErrorOutput,
                                             409: OpenApiResponse(s.ErrorOutput, description="An event_id that is "
                                                                  "another event's (code event_id_taken)")}))
    def post(self, request: Request) -> Response:
        """Record live events (staff only): one event, or a list of at most RECO_EVENTS_MAX_BATCH stored all
        or none; the shoppers' next recommendations reflect them. An event_id sent before is not stored twice."""
        many, rows = _one_or_many(s.EventInput, request.data, "events", settings.RECO_EVENTS_MAX_BATCH)
        result = services.events_record([
            catalog_services.EventSpec(
                user_id=v["user"], item_id=v["item"], event=v["event"], occurred_at=v.get("timestamp"),
                weight=v.get("weight"), rating=v.get("rating"), text=v.get("text"), event_id=v.get("event_id"),
                recommendation_id=v.get("recommendation_id"))
            for v in rows])
        if not many:
            duplicate = bool(result.duplicates)
            row = result.duplicates[0] if duplicate else result.stored[0]
            return Response(s.EventOutput(row, context={"duplicate": duplicate}).data,
                            status=200 if duplicate else 201)
        return Response({"received": len(rows), "stored": len(result.stored), "duplicates": len(result.duplicates),
                         "duplicate_event_ids": sorted({row.event_id for row in result.duplicates})},
                        status=201 if result.stored else 200)


class ReloadDataApi(BodyApiView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(request=s.ReloadDataInput, responses={
        200: s.ReloadDataOutput, **_STAFF_ERRORS,
        409: OpenApiResponse(s.ErrorOutput, description="Another shop's data: choose replace or merge; or another "
                                                        "import is running (code import_running)")})
    def post(self, request: Request) -> Response:
        """Re-import the configured data files (staff only); returns the counts."""
        data = s.ReloadDataInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        return Response(services.data_reload(force=v["force"], replace=v["replace"], merge=v["merge"]))


class ReloadModelApi(BodyApiView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(request=s.ReloadModelInput,
                   responses={200: s.ReloadModelOutput, 404: s.ErrorOutput, 409: s.ErrorOutput, 422: s.ErrorOutput,
                              **_STAFF_ERRORS})
    def post(self, request: Request) -> Response:
        """Activate the newest (or the given) model version (staff only). A broken bundle is refused (422), and so
        is a model none of whose products is in the database (409 ``other_shop``)."""
        data = s.ReloadModelInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(services.model_reload(version=data.validated_data.get("version")))


class MetricsApi(APIView):
    """Prometheus metrics (staff only: a scraper sends a staff token, ``Authorization: Bearer <token>``)."""

    permission_classes = [permissions.IsAdminUser]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[Any, str]:
        """No negotiation: the body is Prometheus's text format whatever the Accept header asks, and an error is
        JSON, as everywhere. Scrapers' own headers (``text/plain;version=0.0.4``, OpenMetrics' media type, without
        ``*/*``) were answered 406, as no JSON renderer matched them."""
        renderer = FastJSONRenderer()
        return renderer, renderer.media_type

    @extend_schema(exclude=True)  # Prometheus's text format, not part of the JSON API
    def get(self, request: Request) -> HttpResponse:
        body, content_type = metrics.exposition()
        return HttpResponse(body, content_type=content_type)


class HealthApi(APIView):
    throttle_classes: list = []  # load balancers and orchestrators probe it often, from one address
    authentication_classes: list = []  # nor does it read credentials: a probe's stale token is no 401

    @extend_schema(responses={200: s.HealthOutput, 503: OpenApiResponse(s.HealthOutput, description="Degraded")})
    def get(self, request: Request) -> Response:
        """Liveness and readiness: the active model version, the database state and the serving process id.

        503 (same body, status "degraded") while the database is unreachable or no model is active.
        ``model_store``: whether a shared model store is used and reachable, and where the active version was
        read from ("cache": this host's last one, while the database cannot be read). ``pending_migrations``,
        only after an upgrade whose ``manage.py migrate`` has not run: this version's migrations the database
        lacks (the service answers, what needs their tables fails until they are applied). ``model_error``, only when
        the active version could not be loaded: why.
        """
        database = catalog_selectors.database_state()
        try:
            engine = registry.current()
        except DatabaseError:  # the first engine needs product metadata from the database
            engine = None
        healthy = engine is not None and database == "ok"
        body = {"status": "ok" if healthy else "degraded", "model_version": engine.version if engine else None,
                "database": database, "process": os.getpid(), "model_store": model_store.status()}
        failure = services.model_load_failure()
        if failure:  # the active version did not load: why (the worker serves its previous model, or none)
            body["model_error"] = failure
        pending = catalog_selectors.pending_migrations() if database == "ok" else []
        if pending:  # an upgrade without migrate: it serves, but what needs a new table fails
            body["pending_migrations"] = pending
        return Response(body, status=200 if healthy else 503)
