from django.contrib import admin

from apps.images.models import Image


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "disk_format", "visibility", "size", "project"]
    list_filter = ["status", "visibility", "disk_format"]
    search_fields = ["name"]
