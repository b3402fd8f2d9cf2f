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
