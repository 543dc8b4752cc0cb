"""Who may use the console for which federation, and the audit reports it lists.

- `Membership`: a console user's role in one federation. A user sees only
  federations they are a member of; superusers see all. The role decides
  what they may do there (`ROLE_CAPABILITIES`):

  ========  ====================  ==================  ==============
  role      generation contents   build a report      payout exports
  ========  ====================  ==================  ==============
  operator  yes                   yes                 yes
  auditor   yes                   yes                 yes
  finance   no (aggregates only)  no                  yes
  ========  ====================  ==================  ==============

  Finance staff need shares and payouts, not the prompts and responses
  (which may hold the application's users' data), so they never see them.

- `AuditReport`: one built report for a federation and an inclusive date
  period. Its HTML and PDF live in the `artifacts` storage; the row keeps
  their storage names, the PDF's sha256 (checked again on every download)
  and the headline numbers. Reports are immutable: building a period again
  adds a new `version` beside the old ones.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from registry.models import Federation


class Role(models.TextChoices):
    OPERATOR = "operator"
    AUDITOR = "auditor"
    FINANCE = "finance"


VIEW_GENERATIONS = "view_generations"
BUILD_REPORTS = "build_reports"
VIEW_PAYOUTS = "view_payouts"
ALL_CAPABILITIES = frozenset({VIEW_GENERATIONS, BUILD_REPORTS, VIEW_PAYOUTS})
ROLE_CAPABILITIES: dict[str, frozenset[str]] = {
    Role.OPERATOR: ALL_CAPABILITIES,
    Role.AUDITOR: ALL_CAPABILITIES,
    Role.FINANCE: frozenset({VIEW_PAYOUTS}),
}


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="console_memberships")
    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="console_memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "federation"], name="console_one_membership_per_user"),
            models.CheckConstraint(
                condition=models.Q(role__in=[r.value for r in Role]), name="console_membership_role_known"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.federation_id}:{self.role}"


class AuditReport(models.Model):
    class Trigger(models.TextChoices):
        SCHEDULE = "schedule"
        CONSOLE = "console"
        COMMAND = "command"

    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="audit_reports")
    period_start = models.DateField()
    period_end = models.DateField()  # inclusive
    version = models.PositiveIntegerField(default=1)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    html_path = models.CharField(max_length=500)  # storage names in storages["artifacts"]
    pdf_path = models.CharField(max_length=500)
    pdf_sha256 = models.CharField(max_length=64)
    html_sha256 = models.CharField(max_length=64)
    pdf_pages = models.PositiveIntegerField()
    summary = models.JSONField(default=dict)  # headline numbers, shown in the list without opening files
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["federation", "period_start", "period_end", "version"], name="console_report_version_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(period_end__gte=models.F("period_start")), name="console_report_period_ordered"
            ),
        ]
        ordering = ["-period_end", "-period_start", "-version"]

    def __str__(self) -> str:
        return f"{self.federation_id}:{self.period_start}..{self.period_end} v{self.version}"

    @property
    def pdf_filename(self) -> str:
        return f"protoken-audit-{self.federation.slug}-{self.period_start}-{self.period_end}-v{self.version}.pdf"
