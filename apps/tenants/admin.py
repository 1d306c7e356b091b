from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from apps.tenants.models import Membership, Project, Quota, User

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
