"""The reports by name: what each is, the filters it takes and how it is built. Pages, CSV
exports and the API all go through `build`, so they show the same rows."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from jobs.models import Operation
from portal.reports import adherence, items, jobs, usage
from portal.reports.charts import Chart
from portal.reports.period import Period
from portal.reports.table import Table
from vaults.models import Health


@dataclass(frozen=True)
class Filter:
    """A report's own query-string filter: one of `choices` (or, with `many`, several,
    comma-separated), `default` when left out."""

    name: str
    label: str
    choices: list[tuple[str, str]]
    default: str = ""
    many: bool = False

    def parse(self, params: Mapping[str, Any]) -> str | list[str]:
        # A form's multiple select sends the name once per value; the API takes "a,b".
        getlist = getattr(params, "getlist", None)
        given = ",".join(getlist(self.name)) if getlist else params.get(self.name) or ""
        given = given.strip()
        if not given:
            return self.default.split(",") if self.many and self.default else self.default
        allowed = [c for c, _ in self.choices]
        values = [v.strip() for v in given.split(",") if v.strip()] if self.many else [given]
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ValidationError(
                {self.name: [f"Unknown value {', '.join(bad)[:80]}; use {', '.join(allowed)}."]}
            )
        return values if self.many else values[0]


@dataclass
class Built:
    table: Table
    charts: list[Chart]
    filters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    slug: str
    title: str
    description: str
    make: Callable[[User, Period, dict[str, Any]], Built]
    filters: list[Filter] = field(default_factory=list)


def _items(user: User, period: Period, f: dict[str, Any]) -> Built:
    counts = items.health_counts(user)
    return Built(items.items_table(user, period, f["health"] or None), [items.health_chart(counts)])


def _usage(user: User, period: Period, f: dict[str, Any]) -> Built:
    return Built(usage.usage_table(user, period, f["by"]), usage.usage_charts(user, period))


def _jobs(user: User, period: Period, f: dict[str, Any]) -> Built:
    table = jobs.job_days(user, period, f["operation"])
    return Built(
        table,
        [
            jobs.outcome_chart(table, "jobs-outcomes", "Jobs per day by outcome"),
            jobs.data_chart(table, "jobs-data"),
        ],
    )


def _adherence(user: User, period: Period, f: dict[str, Any]) -> Built:
    scheduled = adherence.scheduled_items(user, period)
    return Built(
        adherence.adherence_table(period, scheduled),
        [adherence.adherence_chart(period, scheduled)],
    )


REPORTS: dict[str, Report] = {
    r.slug: r
    for r in [
        Report(
            "backup-items",
            "Backup items",
            "Every protected VM with its health, last successful backup and the backups of "
            "the period.",
            _items,
            [Filter("health", "Health", [("", "Any"), *Health.choices])],
        ),
        Report(
            "usage",
            "Usage",
            "Logical size protected, bytes stored and protected items per day, by vault or "
            "by VM, as recorded each day.",
            _usage,
            [Filter("by", "By", [(usage.BY_VAULT, "Vault"), (usage.BY_VM, "VM")], usage.BY_VAULT)],
        ),
        Report(
            "jobs",
            "Jobs",
            "Jobs per day: outcome, success rate, duration and data read, changed and stored.",
            _jobs,
            [
                Filter(
                    "operation",
                    "Operations",
                    list(Operation.choices),
                    ",".join(jobs.DEFAULT_OPERATIONS),
                    many=True,
                )
            ],
        ),
        Report(
            "adherence",
            "Policy adherence",
            "Items whose last successful backup is older than their policy's schedule demands.",
            _adherence,
        ),
    ]
}


def build(report: Report, user: User, period: Period, params: Mapping[str, Any]) -> Built:
    """The report for the user over the period; a ValidationError names a bad filter."""
    chosen = {f.name: f.parse(params) for f in report.filters}
    built = report.make(user, period, chosen)
    built.filters = chosen
    return built
