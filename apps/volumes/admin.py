from django.contrib import admin

from apps.volumes.models import Attachment, Backup, Message, Snapshot, Transfer, Volume, VolumeType


@admin.register(VolumeType)
class VolumeTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "is_public", "extra_specs"]
    search_fields = ["name"]


@admin.register(Volume)
class VolumeAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "project", "size", "status", "volume_type", "host", "bootable"]
    list_filter = ["status", "volume_type", "bootable"]
    search_fields = ["name", "id"]


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "project", "volume", "size", "status", "temporary"]
    list_filter = ["status", "temporary"]
    search_fields = ["name", "id"]


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin):
    list_display = ["id", "volume", "instance", "device", "status", "host", "delete_on_termination"]
    list_filter = ["status"]


@admin.register(Backup)
class BackupAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "project", "volume_uuid", "size", "status", "parent", "temporary"]
    list_filter = ["status", "temporary"]
    search_fields = ["name", "id"]


@admin.register(Transfer)
class TransferAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "project", "volume", "created_at"]
    exclude = ["salt", "key_hash"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["created_at", "project", "resource_type", "resource_uuid", "event_id", "user_message"]
    list_filter = ["resource_type"]
