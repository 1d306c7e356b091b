"""The portal's image pages (the API's are in apps/images/api/urls.py)."""

from django.urls import path

from apps.images import views

app_name = "images"

urlpatterns = [
    path("", views.image_list, name="list"),
    path("create/", views.image_create, name="create"),
    path("<uuid:image_id>/", views.image_detail, name="detail"),
    path("<uuid:image_id>/status/", views.image_status, name="status"),
    path("<uuid:image_id>/upload/", views.image_upload, name="upload"),
    path("<uuid:image_id>/download/", views.image_download, name="download"),
    path("<uuid:image_id>/edit/", views.image_edit, name="edit"),
    path("<uuid:image_id>/delete/", views.image_delete, name="delete"),
    path("<uuid:image_id>/activation/", views.image_activation, name="activation"),
    path("<uuid:image_id>/members/", views.image_member_add, name="member_add"),
    path("<uuid:image_id>/members/<uuid:member_id>/delete/", views.image_member_remove, name="member_remove"),
    path("<uuid:image_id>/membership/", views.image_membership, name="membership"),
]
