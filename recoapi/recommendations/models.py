"""Model versions known to the service (mirrors of the bundles in models/)."""

from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

VARIANTS = ("served", "retrieval", "popular")
"""modeling.recommender.VARIANTS, spelled out so that loading the models does not load the modeling code."""

ANONYMOUS = "anonymous"
"""The key of a visitor's list (``items=``, ``text=``) in an answer (and, until migration 0008, the shopper id such a
list was recorded under; a shopper may have this id too)."""

VISITOR = ""
"""The shopper id a list asked for without a shopper is recorded under (a visitor's: ``items=``, ``text=``; a product
page's ``similar_items``): no shopper's id is empty (imports and ``POST /events`` refuse one), so such a list and a
shopper's are never mixed up."""

SIMILAR_ITEMS = "similar_items"
"""The strategy a ``similar_items`` list is recorded and attributed under (beside the shoppers' strategies)."""


class ModelVersion(models.Model):
    """One trained bundle; ``is_active`` mirrors models/ACTIVE."""

    version = models.CharField(primary_key=True, max_length=64)
    created_at = models.DateTimeField()
    is_active = models.BooleanField(default=False, db_index=True)
    metrics = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    counts = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-version"]

    def __str__(self) -> str:
        return self.version + (" (active)" if self.is_active else "")


class ModelActivation(models.Model):
    """One activation of a model version (training with ``--activate``, a retraining that passed its gate, a
    reload, a rollback, the admin): ``rollback`` returns to the version that served before the active one."""

    version = models.CharField(max_length=64, db_index=True)
    activated_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-id"]  # the order they were written in (activations are one at a time), not hosts' clocks

    def __str__(self) -> str:
        return f"{self.version} at {self.activated_at:%Y-%m-%d %H:%M:%S}"


class RecommendationList(models.Model):
    """One list the API answered for one shopper (an impression): what was shown, by which strategy and model.

    Written in the background, a moment after the answer (recoapi.recommendations.impressions). Events
    sent with its ``recommendation_id`` are attributed to it (the product's position in ``items``).
    """

    id = models.CharField(primary_key=True, max_length=32, help_text="The answer's recommendation_id.")
    created_at = models.DateTimeField(db_index=True)
    shopper_id = models.CharField(max_length=128, db_index=True, blank=True,
                                  help_text="The shopper id asked about (empty for a list asked for without one: a "
                                            "visitor's, with items or text, or a product page's similar items).")
    strategy = models.CharField(max_length=16, db_index=True)
    model_version = models.CharField(max_length=64, db_index=True)
    items = models.JSONField(default=list, help_text="The product ids shown, best first (position 1 first).")
    experiment_id = models.IntegerField(null=True, blank=True, db_index=True,
                                        help_text="The experiment running when it was shown (none: no experiment).")
    arm = models.CharField(max_length=32, blank=True, default="", help_text="The experiment's arm that answered.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.id} {self.shopper_id} {self.strategy}"


class TrainingRun(models.Model):
    """One `manage.py retrain`: what it trained on, how both models did on the newest interactions, and why
    the candidate was or was not activated. Written once, when the run ends (a killed run leaves no row)."""

    ACTIVATED = "activated"
    REFUSED = "refused"
    SKIPPED = "skipped"
    FAILED = "failed"
    DECISIONS = [(ACTIVATED, "activated"), (REFUSED, "refused by the gate"), (SKIPPED, "nothing to do"),
                 (FAILED, "failed")]

    started_at = models.DateTimeField()
    seconds = models.FloatField()
    decision = models.CharField(max_length=16, choices=DECISIONS, db_index=True)
    reason = models.TextField()
    candidate_version = models.CharField(max_length=64, blank=True, default="")
    previous_version = models.CharField(max_length=64, blank=True, default="",
                                        help_text="The model active when the run started.")
    data_counts = models.JSONField(default=dict, blank=True)
    holdout = models.JSONField(default=dict, blank=True, help_text="The cut-off and what came after it.")
    candidate_metrics = models.JSONField(default=dict, blank=True)
    previous_metrics = models.JSONField(default=dict, blank=True)
    tolerance = models.FloatField()

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.started_at:%Y-%m-%d %H:%M} {self.decision} {self.candidate_version}".strip()


def _salt() -> str:
    return uuid.uuid4().hex


class Experiment(models.Model):
    """An A/B test: shoppers split between arms by a stable hash of their id (recoapi.recommendations.experiments).

    At most one runs at a time. Stopping names the winning arm: its model version becomes the active model
    and its setting serves every shopper while that model stays active, until the next experiment starts.
    """

    DRAFT = "draft"
    RUNNING = "running"
    STOPPED = "stopped"
    STATUSES = [(DRAFT, "draft"), (RUNNING, "running"), (STOPPED, "stopped")]

    name = models.CharField(max_length=64, unique=True)
    description = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=STATUSES, default=DRAFT, db_index=True)
    salt = models.CharField(max_length=32, default=_salt, editable=False,
                            help_text="Mixed into the hash of shopper ids, so each experiment splits them anew.")
    k = models.PositiveSmallIntegerField(default=10, validators=[MinValueValidator(1), MaxValueValidator(100)],
                                         help_text="CTR@k counts clicks on the first k places (1 to 100).")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    winner = models.ForeignKey("ExperimentArm", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+", help_text="The arm all traffic went to when it stopped.")
    winner_version = models.CharField(
        max_length=64, blank=True, default="",
        help_text="The model version active when it stopped (the winner's, or the one then active): the winner's "
                  "setting serves only while this version is active.")
    winner_activation = models.BigIntegerField(
        null=True, blank=True,
        help_text="The latest model activation once it stopped (its record's id): the winner's setting serves until "
                  "another is recorded. Empty for an experiment stopped before this was recorded.")

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["status"], condition=models.Q(status="running"),
                                               name="one_running_experiment")]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class ExperimentArm(models.Model):
    """One arm: a model version (blank: whichever is active) and a setting, with its share of the shoppers.

    The experiment's first arm (lowest id) is the control the others are compared with.
    """

    SETTINGS = [(v, v) for v in VARIANTS]

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="arms")
    name = models.CharField(max_length=32)
    share = models.PositiveIntegerField(default=50, help_text="Relative weight: shares 50 and 50 split evenly.")
    model_version = models.CharField(max_length=64, blank=True, default="",
                                     help_text="Blank: the active model.")
    setting = models.CharField(max_length=16, choices=SETTINGS, default=VARIANTS[0],
                               help_text="served: both stages; retrieval: the two-tower's order of the same "
                                         "candidates; popular: recent popularity for everyone.")

    class Meta:
        ordering = ["experiment", "id"]
        constraints = [models.UniqueConstraint(fields=["experiment", "name"], name="unique_arm_name")]

    def __str__(self) -> str:
        return f"{self.experiment.name}/{self.name}"
