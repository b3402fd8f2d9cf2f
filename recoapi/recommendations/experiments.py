"""A/B tests: which arm answers a shopper, and how each arm did.

A running experiment splits the shoppers between its arms by a hash of the experiment's salt and the
shopper id (BLAKE2b, not Python's per-process ``hash``): the same shopper lands in the same arm on every
worker and every host for the experiment's life, with no shared state to keep. Arms' shares cannot change
while it runs (the admin refuses), so neither can the split. Anonymous visitors are not split: they get
what everyone would get without the experiment.

Each worker reads the experiment plan from the database at most every ``RECO_ACTIVE_CHECK_SECONDS`` (as it
looks at the active model), so a start or a stop reaches every worker within that time.

Results (:func:`results`) count per arm the lists shown, the lists with a click (an attributed event on one of
their first ``k`` products: a view, cart or purchase of a product the list showed, sent with its
``recommendation_id`` by the shopper it was shown to, see :func:`recoapi.recommendations.feedback.credited`),
the lists with an attributed purchase and the revenue of those purchases (at today's prices, where known).
Each arm is compared with the control (the first arm): the difference of the two proportions with a 95%
Newcombe hybrid score interval (Wilson intervals of each arm combined; Newcombe 1998, method 10) and the
p-value of the two-sided pooled two-proportion z-test, both from statsmodels. The unit is the list: lists of
one shopper are not independent, so with a few very active shoppers the intervals are too narrow; the shoppers
per arm are reported beside the lists.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from recoapi.catalog.models import Product
from recoapi.exceptions import ApplicationError, Conflict
from recoapi.recommendations import feedback, model_store
from recoapi.recommendations.engine import registry
from recoapi.recommendations.models import (
    VARIANTS,
    Experiment,
    ExperimentArm,
    ModelActivation,
    RecommendationList,
)

logger = logging.getLogger(__name__)

SERVED = VARIANTS[0]


@dataclass(frozen=True)
class Arm:
    """One arm as served: ``model_version`` "" means the active model."""

    id: int
    name: str
    share: int
    model_version: str
    setting: str


@dataclass(frozen=True)
class Plan:
    """What the service answers with now.

    ``experiment_id`` is None without a running experiment. ``setting`` is the winning setting of the last
    stopped experiment (``served`` when there is none): every shopper's without a running experiment, and
    the visitors' (who are not split) while one runs.
    """

    experiment_id: int | None = None
    name: str = ""
    salt: str = ""
    arms: tuple[Arm, ...] = ()
    setting: str = SERVED

    def arm_for(self, shopper_id: str) -> Arm | None:
        """The arm that answers ``shopper_id`` (None without a running experiment)."""
        if self.experiment_id is None or not self.arms:
            return None
        point = bucket(self.salt, shopper_id) * sum(arm.share for arm in self.arms)
        for arm in self.arms:
            if point < arm.share:
                return arm
            point -= arm.share
        return self.arms[-1]  # rounding at the very top

    @property
    def model_versions(self) -> set[str]:
        """Model versions named by the arms (besides the active one)."""
        return {arm.model_version for arm in self.arms if arm.model_version}


def bucket(salt: str, shopper_id: str) -> float:
    """A number in [0, 1) fixed by the salt and the shopper id: the first 8 bytes of BLAKE2b over both."""
    digest = hashlib.blake2b(f"{salt}:{shopper_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


_plan = Plan()
_plan_read_at = float("-inf")
_plan_lock = threading.Lock()


def plan() -> Plan:
    """The process's plan, read from the database at most every ``RECO_ACTIVE_CHECK_SECONDS``.

    When the database cannot be read, the last plan read stays in force (and the read is retried at the
    next interval).
    """
    global _plan, _plan_read_at
    now = time.monotonic()
    if now - _plan_read_at < settings.RECO_ACTIVE_CHECK_SECONDS:
        return _plan
    with _plan_lock:
        if now - _plan_read_at < settings.RECO_ACTIVE_CHECK_SECONDS:
            return _plan
        try:
            new = read_plan()
            if new.model_versions != _plan.model_versions:  # free the engines of arms that ended
                registry.retain(new.model_versions)
            _plan = new
        except DatabaseError as exc:
            logger.warning("cannot read the running experiment; keeping the last plan: %s", exc)
        _plan_read_at = now
        return _plan


def forget() -> None:
    """Make the next :func:`plan` call read the database (after a start or a stop in this process; tests)."""
    global _plan_read_at
    _plan_read_at = float("-inf")


def read_plan() -> Plan:
    """The plan in the database now (three small queries at most)."""
    stopped = (Experiment.objects.filter(status=Experiment.STOPPED, winner__isnull=False)
               .select_related("winner").order_by("-stopped_at").first())
    setting = SERVED  # what visitors get meanwhile too
    if stopped is not None and (not stopped.winner_version or (stopped.winner_version == model_store.active_version()
                                                               and not _activated_since(stopped))):
        # The winner's setting was chosen with that model: a model activated since (retraining, a reload, a
        # rollback) has another ranker, and gets both stages again, also where a later activation returns to the
        # winner's version (an experiment stopped before the version was recorded keeps its setting, as it did).
        setting = stopped.winner.setting
    running = Experiment.objects.filter(status=Experiment.RUNNING).prefetch_related("arms").first()
    if running is not None:
        arms = tuple(Arm(a.id, a.name, a.share, a.model_version, a.setting) for a in running.arms.all())
        return Plan(experiment_id=running.id, name=running.name, salt=running.salt, arms=arms, setting=setting)
    return Plan(setting=setting)


def _activated_since(stopped: Experiment) -> bool:
    """Whether a model was activated after ``stopped`` was stopped, other than the stop's own activation of its
    winner's version: an activation recorded after :attr:`Experiment.winner_activation` (record ids, in the order
    activations were written, whatever the hosts' clocks). An experiment stopped before that was recorded (or
    whose stop is still activating its winner's version) is told by the records' times: the first one after the
    stop is its own when it names the winner's version (none is written where that version was active already)."""
    if stopped.winner_activation is not None:
        return ModelActivation.objects.filter(id__gt=stopped.winner_activation).exists()
    later = list(ModelActivation.objects.filter(activated_at__gte=stopped.stopped_at).order_by("id")
                 .values_list("version", flat=True)[:2])
    if later and later[0] == stopped.winner_version:
        later = later[1:]
    return bool(later)


def record_winner_activation(experiment: Experiment) -> None:
    """Write down the latest model activation as the one ``experiment``'s stop leaves (once its winner's version
    is active): the winner's setting serves until another activation is recorded (see :func:`read_plan`)."""
    latest = ModelActivation.objects.values_list("id", flat=True).first() or 0  # newest first; 0: none yet
    Experiment.objects.filter(pk=experiment.pk).update(winner_activation=latest)
    experiment.winner_activation = latest
    forget()


def check_arms(experiment: Experiment, versions: list[str]) -> None:
    """Refuse arms that cannot run.

    Raises:
        ApplicationError: fewer than two arms, no positive share, or an unknown model version (code
            ``invalid_experiment``).
    """
    arms = list(experiment.arms.all())
    problems = []
    if len(arms) < 2:
        problems.append("an experiment needs at least two arms")
    if arms and sum(arm.share for arm in arms) <= 0:
        problems.append("the arms' shares add up to 0")
    unknown = sorted({arm.model_version for arm in arms if arm.model_version and arm.model_version not in versions})
    if unknown:
        problems.append(f"unknown model version(s): {', '.join(unknown)}")
    if problems:
        raise ApplicationError(f"Experiment {experiment.name!r} cannot start: {'; '.join(problems)}.",
                               code="invalid_experiment")


def start(experiment: Experiment, versions: list[str]) -> Experiment:
    """Start a draft experiment (``versions``: the model versions that exist).

    Raises:
        ApplicationError: the arms cannot run (see :func:`check_arms`), or it is not a draft.
        Conflict: another experiment is running (code ``experiment_running``).
    """
    if experiment.status != Experiment.DRAFT:
        raise ApplicationError(f"Experiment {experiment.name!r} is {experiment.status}; only a draft can start.",
                               code="invalid_experiment")
    check_arms(experiment, versions)
    running = Experiment.objects.filter(status=Experiment.RUNNING).exclude(pk=experiment.pk).first()
    if running is not None:
        raise Conflict(f"Experiment {running.name!r} is running; stop it first (one experiment at a time).",
                       code="experiment_running")
    started = timezone.now()
    try:
        with transaction.atomic():  # only from draft: a start or stop that raced with this one wins
            changed = Experiment.objects.filter(pk=experiment.pk, status=Experiment.DRAFT).update(
                status=Experiment.RUNNING, started_at=started)
    except IntegrityError as exc:  # another start won the race (one running experiment: a unique constraint)
        raise Conflict("Another experiment was started meanwhile (one experiment at a time).",
                       code="experiment_running") from exc
    if not changed:
        raise Conflict(f"Experiment {experiment.name!r} was started or stopped meanwhile.", code="experiment_changed")
    experiment.status, experiment.started_at = Experiment.RUNNING, started
    forget()
    logger.info("experiment %s started with arms %s", experiment.name,
                ", ".join(f"{a.name} ({a.share})" for a in experiment.arms.all()))
    return experiment


def check_stoppable(experiment: Experiment, winner: ExperimentArm) -> None:
    """Raises ApplicationError unless ``experiment`` runs and ``winner`` is one of its arms."""
    if experiment.status != Experiment.RUNNING:
        raise ApplicationError(f"Experiment {experiment.name!r} is {experiment.status}, not running.",
                               code="invalid_experiment")
    if winner.experiment_id != experiment.pk:
        raise ApplicationError(f"Arm {winner.name!r} is not an arm of {experiment.name!r}.",
                               code="invalid_experiment")


def stop(experiment: Experiment, winner: ExperimentArm, version: str = "") -> Experiment:
    """Stop a running experiment and send all traffic to ``winner`` (its setting serves every shopper from now
    while ``version``, the model version it goes with, stays active, until the next experiment starts; the caller
    activates its model version).

    Raises:
        ApplicationError: it is not running, or the arm is not one of its arms.
        Conflict: another stop won a race with this one.
    """
    check_stoppable(experiment, winner)
    stopped = timezone.now()
    if not Experiment.objects.filter(pk=experiment.pk, status=Experiment.RUNNING).update(
            status=Experiment.STOPPED, stopped_at=stopped, winner=winner, winner_version=version):
        raise Conflict(f"Experiment {experiment.name!r} was stopped meanwhile.", code="experiment_changed")
    experiment.status, experiment.stopped_at, experiment.winner = Experiment.STOPPED, stopped, winner
    experiment.winner_version = version
    forget()
    logger.info("experiment %s stopped; all traffic to arm %s", experiment.name, winner.name)
    return experiment


@dataclass(frozen=True)
class Difference:
    """An arm's proportion minus the control's, with its 95% interval and the z-test's two-sided p-value."""

    value: float
    low: float
    high: float
    p_value: float


def difference(count: int, total: int, control_count: int, control_total: int) -> Difference | None:
    """``count/total - control_count/control_total``: Newcombe's hybrid score interval (95%) and the pooled
    two-proportion z-test (statsmodels). None when either side has no lists."""
    if total == 0 or control_total == 0:
        return None
    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

    low, high = confint_proportions_2indep(count, total, control_count, control_total, method="newcomb",
                                           compare="diff", alpha=0.05)
    if count + control_count in (0, total + control_total):  # both all 0 or all 1: no variance to test
        p_value = 1.0
    else:
        _, p_value = proportions_ztest([count, control_count], [total, control_total])
    return Difference(count / total - control_count / control_total, float(low), float(high), float(p_value))


def results(experiment: Experiment) -> dict[str, Any]:
    """How each arm did: shown lists, clicks within the first k places, purchases, revenue, and each arm
    against the control (see the module docstring).

    Returns:
        ``{"k", "control", "arms": [{"name", "model_version", "setting", "share", "answered_by", "lists",
        "shoppers",
        "clicked_lists", "ctr", "views", "carts", "purchases", "converted_lists", "conversion", "revenue",
        "ctr_difference", "conversion_difference"}]}``; rates are None without lists, revenue None when no
        purchased product has a price, the differences None for the control. ``answered_by``: the model
        versions that answered the arm's lists (more than one when the active model changed during the
        experiment, or when a worker could not load the arm's model and the active one answered).
    """
    arms = list(experiment.arms.all())
    lists = RecommendationList.objects.filter(experiment_id=experiment.pk)
    shown = {row["arm"]: row for row in lists.values("arm").annotate(lists=Count("id"),
                                                                      shoppers=Count("shopper_id", distinct=True))}
    answered_by: dict[str, list[str]] = defaultdict(list)
    for arm_name, version in lists.values_list("arm", "model_version").distinct().order_by("arm", "model_version"):
        answered_by[arm_name].append(version)
    attributed = feedback.attributable_events(lists.values("id"))
    events = list(attributed.values_list("recommendation_id", "product_id", "event", "shopper_id"))
    items = {row[0]: row[1:] for row in  # only the lists that received events (a subquery, not a list)
             lists.filter(id__in=attributed.values("recommendation_id")).values_list("id", "arm", "items",
                                                                                    "shopper_id")}
    prices = dict(Product.objects.filter(id__in=attributed.filter(event="purchase").values("product_id"))
                  .values_list("id", "price"))
    clicked: dict[str, set[str]] = defaultdict(set)
    converted: dict[str, set[str]] = defaultdict(set)
    counts: dict[str, Counter] = defaultdict(Counter)  # views, carts, purchases (feedback.EVENTS)
    revenue: dict[str, float | None] = defaultdict(lambda: None)
    for recommendation_id, product_id, event, shopper_id in events:
        arm, shown_items, shown_to = items.get(recommendation_id, ("", [], None))
        if product_id not in shown_items or not feedback.credited(list_shopper=shown_to, event_shopper=shopper_id):
            continue  # an event sent with the id of a list that did not show the product, or not to its shopper
        counts[arm][event] += 1
        if shown_items.index(product_id) < experiment.k:
            clicked[arm].add(recommendation_id)
        if event == "purchase":
            converted[arm].add(recommendation_id)
            price = prices.get(product_id)
            if price is not None:
                revenue[arm] = (revenue[arm] or 0.0) + float(price)
    rows = []
    for arm in arms:
        n = shown.get(arm.name, {}).get("lists", 0)
        rows.append({"name": arm.name, "model_version": arm.model_version, "setting": arm.setting,
                     "share": arm.share, "answered_by": answered_by.get(arm.name, []), "lists": n,
                     "shoppers": shown.get(arm.name, {}).get("shoppers", 0),
                     "clicked_lists": len(clicked[arm.name]), "ctr": len(clicked[arm.name]) / n if n else None,
                     **{f"{event}s": counts[arm.name][event] for event in ("view", "cart", "purchase")},
                     "converted_lists": len(converted[arm.name]),
                     "conversion": len(converted[arm.name]) / n if n else None,
                     "revenue": None if revenue[arm.name] is None else round(revenue[arm.name], 2)})
    control = rows[0] if rows else None
    for row in rows:
        for name, count in (("ctr", "clicked_lists"), ("conversion", "converted_lists")):
            diff = None if row is control else difference(row[count], row["lists"], control[count],
                                                          control["lists"])
            row[f"{name}_difference"] = None if diff is None else diff.__dict__
    return {"k": experiment.k, "control": control["name"] if control else None, "arms": rows}
