"""Model versions known to the service (mirrors of the bundles in models/)."""

from __future__ import annotations

from django.db import models


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


class RecommendationList(models.Model):
    """One list the API answered for one shopper (an impression): what was shown, by which strategy and model.

    Written in the background, a moment after the answer (recoapi.recommendations.impressions). Events
    sent with its ``recommendation_id`` are attributed to it (the product's position in ``items``).
    """

    id = models.CharField(primary_key=True, max_length=32, help_text="The answer's recommendation_id.")
    created_at = models.DateTimeField(db_index=True)
    shopper_id = models.CharField(max_length=128, db_index=True,
                                  help_text='The shopper id asked about ("anonymous" for a visitor).')
    strategy = models.CharField(max_length=16, db_index=True)
    model_version = models.CharField(max_length=64, db_index=True)
    items = models.JSONField(default=list, help_text="The product ids shown, best first (position 1 first).")

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
