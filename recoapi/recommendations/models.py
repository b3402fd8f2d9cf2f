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
