"""Stored recommendation lists are deleted after the retention period, except an existing experiment's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from recoapi.recommendations import impressions
from recoapi.recommendations.models import Experiment, RecommendationList

ROOT = Path(__file__).resolve().parents[2]


def _lists(days_ago: list[float], experiment_id: int | None = None, prefix: str = "l") -> list[str]:
    now = timezone.now()
    rows = [RecommendationList(id=f"{prefix}{n:04d}", created_at=now - timedelta(days=days), shopper_id="s",
                               strategy="two_tower", model_version="v", items=["a", "b"],
                               experiment_id=experiment_id) for n, days in enumerate(days_ago)]
    RecommendationList.objects.bulk_create(rows)
    return [row.id for row in rows]


@pytest.mark.django_db
def test_old_lists_go_in_chunks_recent_ones_and_an_existing_experiments_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(impressions, "PRUNE_CHUNK", 3)  # several chunks, the last one short
    old = _lists([40.0] * 7 + [31.0])
    recent = _lists([29.0, 1.0, 0.0], prefix="r")
    experiment = Experiment.objects.create(name="ranker-test")
    kept_for_experiment = _lists([400.0, 50.0], experiment_id=experiment.pk, prefix="e")
    orphans = _lists([400.0], experiment_id=experiment.pk + 1000, prefix="o")  # its experiment was deleted
    chunks: list[int] = []
    deleted = impressions.prune(timezone.now() - timedelta(days=30), progress=chunks.append)
    assert deleted == len(old) + len(orphans) == sum(chunks) and chunks == [3, 3, 3]
    assert set(RecommendationList.objects.values_list("id", flat=True)) == set(recent + kept_for_experiment)
    assert impressions.prune(timezone.now() - timedelta(days=30)) == 0


@pytest.mark.django_db
def test_prune_lists_counts_deletes_and_says_how_many() -> None:
    _lists([100.0, 95.0, 10.0])
    out = StringIO()
    call_command("prune_lists", "--days", "30", "--dry-run", stdout=out)
    assert "2 recommendation list(s) answered more than 30 days ago would be deleted" in out.getvalue()
    assert RecommendationList.objects.count() == 3
    out = StringIO()
    with override_settings(RECO_LIST_RETENTION_DAYS=90.0):
        call_command("prune_lists", stdout=out, stderr=StringIO())  # the setting's 90 days
    assert "Deleted 2 recommendation list(s) answered more than 90 days ago" in out.getvalue()
    assert RecommendationList.objects.count() == 1


@pytest.mark.django_db
def test_prune_lists_keeps_everything_when_retention_is_off_and_refuses_bad_days() -> None:
    _lists([1000.0])
    out = StringIO()
    with override_settings(RECO_LIST_RETENTION_DAYS=0.0):
        call_command("prune_lists", stdout=out)
    assert "every list is kept" in out.getvalue() and RecommendationList.objects.count() == 1
    for days in ("0", "-3", "nan", "inf"):
        with pytest.raises(CommandError, match=re.escape("--days must be a positive number of days")):
            call_command("prune_lists", "--days", days, stdout=StringIO())
    assert RecommendationList.objects.count() == 1


@pytest.mark.django_db
def test_the_scheduler_prunes_at_each_check() -> None:
    _lists([200.0, 5.0])
    out = StringIO()
    with override_settings(RECO_LIST_RETENTION_DAYS=30.0):
        call_command("run_scheduler", "--once", stdout=out)
    assert "deleted 1 recommendation list(s) answered more than 30 days ago" in out.getvalue()
    assert list(RecommendationList.objects.values_list("id", flat=True)) == ["l0001"]
    with override_settings(RECO_LIST_RETENTION_DAYS=0.0):
        call_command("run_scheduler", "--once", stdout=StringIO())
    assert RecommendationList.objects.count() == 1


@pytest.mark.parametrize("days, shown", [("-1", "-1"), ("1000000", "1e+06")])
def test_a_retention_out_of_range_is_one_line_from_manage_py(tmp_path: Path, days: str, shown: str) -> None:
    """Negative, or beyond a century (a date that many days ago is out of Python's range: prune_lists and the
    scheduler ended in OverflowError): refused at start."""
    env = {**os.environ, "RECO_LIST_RETENTION_DAYS": days, "RECO_LOGS_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "manage.py", "prune_lists", "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == ("ImproperlyConfigured: RECO_LIST_RETENTION_DAYS must be 0 (keep every list) or a "
                                   f"number of days up to 36500, got {shown}")


@pytest.mark.django_db
@pytest.mark.parametrize("days", ["36501", "1000000", "1e308"])
def test_days_beyond_a_century_are_refused_not_an_overflow(days: str) -> None:
    """A date that many days ago is out of Python's range: OverflowError from the command and the scheduler."""
    from recoapi.recommendations.services import recommendation_lists_prune

    _lists([1000.0])
    for dry_run in ([], ["--dry-run"]):
        with pytest.raises(CommandError, match=re.escape("--days must be a positive number of days up to 36500, got")):
            call_command("prune_lists", "--days", days, *dry_run, stdout=StringIO())
    with pytest.raises(ValueError, match="up to 36500"):
        recommendation_lists_prune(days=float(days), dry_run=True)
    assert recommendation_lists_prune(days=36_500, dry_run=True) == 0  # the bound itself is a date Python has
    assert RecommendationList.objects.count() == 1
