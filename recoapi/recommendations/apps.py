from django.apps import AppConfig


class RecommendationsConfig(AppConfig):
    name = "recoapi.recommendations"
    label = "recommendations"
    verbose_name = "Recommendations"
