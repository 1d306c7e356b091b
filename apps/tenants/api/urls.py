from django.urls import path

from apps.tenants.api import views

urlpatterns = [
    path("", views.IdentityVersionsView.as_view()),
    path("v3", views.IdentityVersionView.as_view()),
    path("v3/", views.IdentityVersionView.as_view()),
    path("v3/auth/tokens", views.AuthTokensView.as_view()),
]
