"""The policy form: flat fields that build the policy representation `policies.spec` validates.

The form itself checks only what HTML cannot (whole numbers, known choices); every rule of a
policy is `validate_policy`'s, whose error keys (`schedule.interval_hours`,
`retention.weekly.weekdays`, …) `field_for_error` maps back onto the fields here.
"""

from collections.abc import Sequence

from django import forms

from policies.models import Consistency, PolicyKind
from policies.spec import (
    FREQUENCIES,
    HOURLY_INTERVALS,
    MONTHS,
    WEEK_ORDINALS,
    WEEKDAYS,
)

RULES = ("daily", "weekly", "monthly", "yearly")
SCHEDULE_KEYS = ("time", "weekdays", "interval_hours", "window_start", "window_hours")

WEEKDAY_CHOICES = [(d, d.capitalize()) for d in WEEKDAYS]
MONTH_CHOICES = [(m, m.capitalize()) for m in MONTHS]
WEEK_CHOICES = [(w, w.capitalize()) for w in WEEK_ORDINALS]
BASIS_CHOICES = [("weeks", "Week-based (e.g. first Sunday)"), ("days", "Day-based (e.g. day 1)")]


def _checkboxes(
    choices: Sequence[tuple[str, str]], label: str | None = None
) -> forms.MultipleChoiceField:
    return forms.MultipleChoiceField(
        choices=choices, required=False, label=label, widget=forms.CheckboxSelectMultiple
    )


def _count(label: str, help_text: str) -> forms.IntegerField:
    return forms.IntegerField(required=False, label=label, help_text=help_text)


class PolicyForm(forms.Form):
    name = forms.CharField(max_length=50, required=False)
    kind = forms.ChoiceField(
        choices=PolicyKind.choices,
        help_text="Enhanced adds hourly schedules, up to 30 instant-restore days and "
        "selective disk backup.",
    )
    timezone = forms.CharField(
        max_length=64, initial="UTC", help_text="IANA name, e.g. Europe/Berlin"
    )
    consistency = forms.ChoiceField(choices=Consistency.choices)

    schedule_frequency = forms.ChoiceField(
        label="Frequency", choices=[(f, f.capitalize()) for f in FREQUENCIES]
    )
    schedule_time = forms.CharField(
        label="Time", required=False, initial="02:00", help_text="HH:MM (daily and weekly)"
    )
    schedule_weekdays = _checkboxes(WEEKDAY_CHOICES, "Weekdays (weekly)")
    schedule_interval_hours = forms.TypedChoiceField(
        label="Every (hours)",
        coerce=int,
        required=False,
        empty_value=None,
        choices=[("", "—")] + [(h, str(h)) for h in HOURLY_INTERVALS],
        help_text="Hourly only",
    )
    schedule_window_start = forms.CharField(
        label="Window start", required=False, help_text="HH:MM (hourly only)"
    )
    schedule_window_hours = _count("Window length (hours)", "Hourly only: 4–24 hours")

    instant_restore_days = _count(
        "Instant restore (days)",
        "Standard 1–5 (5 for weekly), enhanced 1–30; empty for the default.",
    )

    daily_enabled = forms.BooleanField(required=False, label="Keep daily backups")
    daily_days = _count("Days", "7–9999 days")

    weekly_enabled = forms.BooleanField(required=False, label="Keep weekly backups")
    weekly_weeks = _count("Weeks", "1–5163 weeks")
    weekly_weekdays = _checkboxes(WEEKDAY_CHOICES, "On")

    monthly_enabled = forms.BooleanField(required=False, label="Keep monthly backups")
    monthly_months = _count("Months", "1–1188 months")
    monthly_basis = forms.ChoiceField(
        choices=BASIS_CHOICES, initial="weeks", widget=forms.RadioSelect, label="Based on"
    )
    monthly_weeks = _checkboxes(WEEK_CHOICES, "Weeks")
    monthly_weekdays = _checkboxes(WEEKDAY_CHOICES, "Weekdays")
    monthly_days = forms.CharField(
        required=False, label="Days of the month", help_text='1–28 or "last", comma-separated'
    )

    yearly_enabled = forms.BooleanField(required=False, label="Keep yearly backups")
    yearly_years = _count("Years", "1–99 years")
    yearly_months = _checkboxes(MONTH_CHOICES, "In months")
    yearly_basis = forms.ChoiceField(
        choices=BASIS_CHOICES, initial="weeks", widget=forms.RadioSelect, label="Based on"
    )
    yearly_weeks = _checkboxes(WEEK_CHOICES, "Weeks")
    yearly_weekdays = _checkboxes(WEEKDAY_CHOICES, "Weekdays")
    yearly_days = forms.CharField(
        required=False, label="Days of the month", help_text='1–28 or "last", comma-separated'
    )

    # -- representation -> form ---------------------------------------------------------------

    @classmethod
    def initial_from(cls, rep: dict) -> dict:
        schedule = rep.get("schedule") or {}
        initial = {
            "name": rep.get("name", ""),
            "kind": rep.get("kind", "standard"),
            "timezone": rep.get("timezone", "UTC"),
            "consistency": rep.get("consistency", "default"),
            "schedule_frequency": schedule.get("frequency", "daily"),
            "instant_restore_days": rep.get("instant_restore_days"),
        }
        for key in SCHEDULE_KEYS:
            if key in schedule:
                initial[f"schedule_{key}"] = schedule[key]
        retention = rep.get("retention") or {}
        for rule in RULES:
            value = retention.get(rule)
            initial[f"{rule}_enabled"] = value is not None
            if value is None:
                continue
            for key, item in value.items():
                if key == "days" and rule in ("monthly", "yearly"):
                    initial[f"{rule}_days"] = ", ".join(str(d) for d in item)
                else:
                    initial[f"{rule}_{key}"] = item
            if rule in ("monthly", "yearly"):
                initial[f"{rule}_basis"] = "days" if "days" in value else "weeks"
        return initial

    # -- form -> representation ---------------------------------------------------------------

    def representation(self) -> dict:
        """The policy as `validate_policy` takes it, from the fields that parsed.

        Fields that do not apply (an hourly window on a daily schedule, a disabled rule) are
        left out; an empty required field is left out too, so the validator names it.
        """
        data = self.cleaned_data
        rep: dict = {}
        for key in ("name", "kind", "timezone", "consistency"):
            if data.get(key) not in (None, ""):
                rep[key] = data[key]
        if data.get("instant_restore_days") is not None:
            rep["instant_restore_days"] = data["instant_restore_days"]

        frequency = data.get("schedule_frequency")
        schedule: dict = {"frequency": frequency} if frequency else {}
        wanted = {
            "daily": ("time",),
            "weekly": ("time", "weekdays"),
            "hourly": ("interval_hours", "window_start", "window_hours"),
        }.get(str(frequency), ())
        for key in wanted:
            value = data.get(f"schedule_{key}")
            if key == "weekdays":
                schedule[key] = list(value or [])
            elif value not in (None, ""):
                schedule[key] = value
        rep["schedule"] = schedule

        retention: dict = {}
        for rule in RULES:
            if data.get(f"{rule}_enabled"):
                retention[rule] = self._rule(rule)
        rep["retention"] = retention
        return rep

    def _rule(self, rule: str) -> dict:
        data = self.cleaned_data
        count_field = {"daily": "days", "weekly": "weeks", "monthly": "months", "yearly": "years"}
        out: dict = {}
        count = data.get(f"{rule}_{count_field[rule]}")
        if count is not None:
            out[count_field[rule]] = count
        if rule == "weekly":
            out["weekdays"] = list(data.get("weekly_weekdays") or [])
        if rule == "yearly":
            out["months"] = list(data.get("yearly_months") or [])
        if rule in ("monthly", "yearly"):
            if data.get(f"{rule}_basis") == "days":
                out["days"] = parse_days(data.get(f"{rule}_days", ""))
            else:
                out["weeks"] = list(data.get(f"{rule}_weeks") or [])
                out["weekdays"] = list(data.get(f"{rule}_weekdays") or [])
        return out

    # -- validator errors -> fields ------------------------------------------------------------

    def field_for_error(self, key: str) -> str | None:
        """`schedule.interval_hours` → `schedule_interval_hours`; None for the top of the form."""
        parts = key.split(".")
        if parts[0] == "schedule" and len(parts) == 2:
            candidate = f"schedule_{parts[1]}"
        elif parts[0] == "retention" and len(parts) == 3:
            candidate = f"{parts[1]}_{parts[2]}"
        elif parts[0] == "retention" and len(parts) == 2:
            candidate = (
                f"{parts[1]}_basis" if parts[1] in ("monthly", "yearly") else f"{parts[1]}_enabled"
            )
        elif len(parts) == 1:
            candidate = key
        else:
            candidate = ""
        return candidate if candidate in self.fields else None

    def add_policy_errors(self, errors: dict) -> None:
        # A field that did not parse already says why; the validator only saw it missing.
        unparsed = set(self.errors)
        for key, messages in errors.items():
            field = self.field_for_error(key)
            if field in unparsed:
                continue
            for message in messages if isinstance(messages, list) else [messages]:
                self.add_error(field, message)


def parse_days(text: str) -> list:
    """ "1, 15, last" → [1, 15, "last"]; anything else is passed on for the validator to name."""
    days: list = []
    for token in text.replace(",", " ").split():
        days.append(int(token) if token.isdigit() else token)
    return days
