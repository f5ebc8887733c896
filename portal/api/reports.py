"""The reports in the API: `GET /api/v1/reports/<report>/?from=&to=` as JSON, or CSV with
`?format=csv` (the same rows as the report pages, from `portal.reports.catalog`)."""

from collections.abc import Mapping
from typing import Any, cast

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import renderers, serializers
from rest_framework.response import Response

from portal.api.base import ApiRequest, ApiView
from portal.reports.catalog import REPORTS, Report, build
from portal.reports.period import parse_period
from portal.reports.table import (
    BYTES,
    COUNT,
    DATE,
    MOMENT,
    PERCENT,
    RATIO,
    SECONDS,
    Column,
    to_csv,
)


class CSVRenderer(renderers.BaseRenderer):
    """`?format=csv`: the view hands over the CSV text; errors become `field,message` rows."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if isinstance(data, str):
            return data.encode()
        rows = ["field,message"]
        for key, value in (data or {}).items():
            for message in value if isinstance(value, list) else [value]:
                rows.append(f'{key},"{str(message).replace(chr(34), chr(39))}"')
        return ("\r\n".join(rows) + "\r\n").encode()


def _field(column: Column) -> serializers.Field:
    kind = column.kind
    if kind in (COUNT, BYTES):
        return serializers.IntegerField(allow_null=True, help_text=column.label)
    if kind in (RATIO, PERCENT, SECONDS):
        return serializers.FloatField(allow_null=True, help_text=column.label)
    if kind == DATE:
        return serializers.DateField(help_text=column.label)
    if kind == MOMENT:
        return serializers.DateTimeField(allow_null=True, help_text=column.label)
    return serializers.CharField(allow_blank=True, help_text=column.label)


def _envelope(report: Report, columns: list[Column]) -> type[serializers.Serializer]:
    name = "".join(part.title() for part in report.slug.split("-"))
    row = type(
        f"{name}ReportRow",
        (serializers.Serializer,),
        {c.key: _field(c) for c in columns},
    )
    return type(
        f"{name}Report",
        (serializers.Serializer,),
        {
            "from": serializers.DateField(help_text="First day of the report."),
            "to": serializers.DateField(help_text="Last day of the report."),
            "rows": row(many=True),
        },
    )


PERIOD = [
    OpenApiParameter("from", str, description="First day, YYYY-MM-DD (default: 30 days back)."),
    OpenApiParameter("to", str, description="Last day, YYYY-MM-DD (default: today)."),
    OpenApiParameter(
        "format", str, enum=["json", "csv"], description="csv: the rows as a CSV file."
    ),
]


class ReportView(ApiView):
    """A report over the vaults the user sees; not paginated (a period has at most 366 days)."""

    renderer_classes = [renderers.JSONRenderer, CSVRenderer]
    report: Report
    columns: list[Column]

    def get(self, request: ApiRequest) -> Response | HttpResponse:
        period = parse_period(request.query_params)
        built = build(self.report, request.user, period, request.query_params)
        if request.accepted_renderer.format == "csv":
            name = f"lifeboat-{self.report.slug}-{period.start}-{period.end}.csv"
            return Response(
                to_csv(built.table),
                content_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{name}"'},
            )
        envelope = _envelope(self.report, built.table.columns)
        body = {"from": period.start, "to": period.end, "rows": built.table.rows}
        return Response(envelope(body).data)


def report_view(slug: str, columns: list[Column]) -> Any:
    """The view of one report, with its filters and rows in the OpenAPI schema."""
    report = REPORTS[slug]
    params = PERIOD + [
        OpenApiParameter(
            f.name,
            str,
            enum=[c for c, _ in f.choices if c],
            description=f"{f.label}" + (" (comma-separated)" if f.many else ""),
        )
        for f in report.filters
    ]

    def get(self: ReportView, request: ApiRequest) -> Response | HttpResponse:
        return ReportView.get(self, request)

    schema = extend_schema(
        operation_id=f"reports_{slug.replace('-', '_')}",
        summary=f"{report.title} report",
        description=report.description,
        parameters=params,
        responses={200: _envelope(report, columns)},
    )
    # A class per report, so each has its own schema (decorating the shared `get` would
    # give every report the last one's).
    view = cast(
        type[ReportView],
        type(
            f"{_envelope(report, columns).__name__}View",
            (ReportView,),
            {
                "report": report,
                "columns": columns,
                "__doc__": report.description,
                "get": schema(get),
            },
        ),
    )
    return view.as_view()
