"""URL routes: the JSON API at the root, the admin, the OpenAPI schema and Swagger UI."""

from django.contrib import admin
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from recoapi.recommendations import admin_views, apis

urlpatterns = [
    path("random_users", apis.RandomUsersApi.as_view(), name="random-users"),
    path("check_users", apis.CheckUsersApi.as_view(), name="check-users"),
    path("recommendations", apis.RecommendationsApi.as_view(), name="recommendations"),
    path("similar_items", apis.SimilarItemsApi.as_view(), name="similar-items"),
    path("events", apis.EventsApi.as_view(), name="events"),
    path("products", apis.ProductsApi.as_view(), name="products"),
    path("reload_data", apis.ReloadDataApi.as_view(), name="reload-data"),
    path("reload_model", apis.ReloadModelApi.as_view(), name="reload-model"),
    path("health", apis.HealthApi.as_view(), name="health"),
    path("metrics", apis.MetricsApi.as_view(), name="metrics"),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("admin/dashboard/", admin.site.admin_view(admin_views.dashboard_view), {"site": admin.site},
         name="admin-dashboard"),
    path("admin/", admin.site.urls),
]

handler400 = "recoapi.exceptions.json_400"
handler403 = "recoapi.exceptions.json_403"
handler404 = "recoapi.exceptions.json_404"
handler500 = "recoapi.exceptions.json_500"
