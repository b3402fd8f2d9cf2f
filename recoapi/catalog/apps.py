from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "recoapi.catalog"
    label = "catalog"
    verbose_name = "Catalogue"
