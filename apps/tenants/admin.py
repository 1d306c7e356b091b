from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from apps.tenants.models import ApplicationCredential, Group, Membership, Project, Quota, CustomRole, User

admin.site.register(User, UserAdmin)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


class QuotaInline(admin.TabularInline):
    model = Quota
    extra = 0
    readonly_fields = ["in_use"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "enabled", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline, QuotaInline]


@admin.register(Group)
class GroupAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name"]
    filter_horizontal = ["users"]


@admin.register(CustomRole)
class CustomRoleAdmin(admin.ModelAdmin):
    list_display = ["name"]


@admin.register(ApplicationCredential)
class ApplicationCredentialAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "project", "expires_at"]
    exclude = ["secret_hash"]
