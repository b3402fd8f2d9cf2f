"""The database refuses a price that is negative or not finite (what every importer and POST /products refuse)."""

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("catalog", "0005_product_price_clear_unshowable"),
    ]

    operations = [
        migrations.AlterField(
            model_name="product",
            name="price",
            field=models.FloatField(blank=True, help_text="Empty: no price. Never negative nor infinite.", null=True,
                                    validators=[django.core.validators.MinValueValidator(0.0)]),
        ),
        migrations.AddConstraint(
            model_name="product",
            constraint=models.CheckConstraint(
                condition=models.Q(("price__isnull", True), models.Q(("price__gte", 0.0),
                                                                     ("price__lte", 1.7976931348623157e308)),
                                   _connector="OR"),
                name="catalog_product_price_finite"),
        ),
    ]
