from django.contrib import admin

from .models import HarmMark, HarmPolicy, PayoutExport, RewardPlan, Settlement


@admin.register(HarmPolicy)
class HarmPolicyAdmin(admin.ModelAdmin):
    list_display = ("federation", "name", "active", "created_by", "created_at")
    list_filter = ("active",)


@admin.register(HarmMark)
class HarmMarkAdmin(admin.ModelAdmin):
    list_display = ("generation", "source", "policy", "actor", "created_at", "revoked_at")
    list_filter = ("source",)


@admin.register(RewardPlan)
class RewardPlanAdmin(admin.ModelAdmin):
    list_display = ("federation", "active", "cadence", "pool_amount", "currency", "basis")


@admin.register(Settlement)
class SettlementAdmin(admin.ModelAdmin):
    list_display = ("federation", "period", "currency", "status", "allocated_amount", "held_amount", "flags_count")
    list_filter = ("status", "currency")

    def has_change_permission(self, request, obj=None) -> bool:  # written by the settlement service only
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(PayoutExport)
class PayoutExportAdmin(admin.ModelAdmin):
    list_display = ("federation", "period", "currency", "total_amount", "lines_count", "csv_sha256")

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
