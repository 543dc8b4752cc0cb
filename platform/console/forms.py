"""Query-string and POST forms. Each answers bad input with a message naming the field and the problem.

A filter form that does not validate never falls back to "no filter": the
page shows the errors with status 400 and no rows, so a mistyped date can
not pass for an empty period.
"""

from __future__ import annotations

from datetime import date, timedelta

from audits.models import Generation
from django import forms
from django.utils import timezone
from registry.models import Federation

from .periods import InvalidPeriod, Period

DATE_ERRORS = {"invalid": "Enter a date as YYYY-MM-DD."}


def _date_field(label: str, *, required: bool = False) -> forms.DateField:
    return forms.DateField(
        label=label,
        required=required,
        input_formats=["%Y-%m-%d"],
        error_messages=DATE_ERRORS,
        widget=forms.DateInput(attrs={"type": "date"}),
    )


class PeriodForm(forms.Form):
    """An inclusive start..end; either may be left out and defaults to the last `default_days` days."""

    start = _date_field("From")
    end = _date_field("To")

    def __init__(self, *args, default_days: int = 30, today: date | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.default = Period.last_days(default_days, today=today or timezone.now().date())

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        end = data.get("end") or self.default.end
        start = data.get("start") or end - timedelta(days=self.default.num_days - 1)
        try:
            data["period"] = Period(start, end)
        except InvalidPeriod as exc:
            raise forms.ValidationError(exc.message) from None
        return data


class ReportForm(PeriodForm):
    """Both dates are required to build a report."""

    start = _date_field("From", required=True)
    end = _date_field("To", required=True)


class GenerationFilterForm(forms.Form):
    status = forms.ChoiceField(required=False, choices=[("", "any status"), *Generation.Status.choices])
    client = forms.CharField(required=False, max_length=64, label="Predicted client")
    round = forms.IntegerField(required=False, min_value=0, label="Round")
    start = _date_field("From")
    end = _date_field("To")

    def __init__(self, *args, federation: Federation, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.federation = federation

    def clean_client(self) -> str:
        client = self.cleaned_data["client"].strip()
        if client and not self.federation.clients.filter(client_id=client).exists():
            raise forms.ValidationError(f"Federation {self.federation.slug!r} has no client {client!r}.")
        return client

    def clean_round(self) -> int | None:
        number = self.cleaned_data["round"]
        if number is not None and not self.federation.rounds.filter(number=number).exists():
            raise forms.ValidationError(f"Federation {self.federation.slug!r} has no round {number}.")
        return number

    def clean(self) -> dict:
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end and end < start:
            raise forms.ValidationError(f"The end date {end} is before the start date {start}.")
        return data

    def selector_filters(self) -> dict:
        """Keyword arguments for `audits.selectors.generation_list`."""
        data = self.cleaned_data
        return {
            "status": data["status"] or None,
            "predicted_client": data["client"] or None,
            "round_number": data["round"],
            "since": Period(data["start"], data["start"]).since if data["start"] else None,
            "until": Period(data["end"], data["end"]).until if data["end"] else None,
        }
