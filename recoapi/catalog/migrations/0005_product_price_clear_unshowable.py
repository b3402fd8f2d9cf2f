"""Prices no number can show: an infinite or negative price an earlier importer let through (RetailRocket's
``ninf``, ``n-20.000``) becomes no price; the next migration has the database refuse such prices (apart, so that
PostgreSQL alters the table in a transaction of its own)."""

import sys

from django.db import migrations, models
from django.db.models.functions import Now


def clear_unshowable_prices(apps, schema_editor) -> None:  # noqa: ANN001  (Django's migration signature)
    """Infinite (and, on PostgreSQL, NaN: it sorts above every number) or negative prices: no price, marked as changed
    (serving workers read changed products by ``updated_at``)."""
    product = apps.get_model("catalog", "Product")
    product.objects.filter(models.Q(price__lt=0.0) | models.Q(price__gt=sys.float_info.max)).update(price=None,
                                                                                                  updated_at=Now())


class Migration(migrations.Migration):

    dependencies = [
        ("catalog", "0004_interaction_recommendation_id"),
    ]

    operations = [
        migrations.RunPython(clear_unshowable_prices, migrations.RunPython.noop),
    ]
