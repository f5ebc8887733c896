"""Report pages: the list of reports and each report as charts, a table and a CSV export.

Every signed-in user may open them; what they show is narrowed to the vaults the user sees
(`vaults.access.visible`, inside `portal.reports`)."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import render

from portal.pages import PageRequest
from portal.reports.catalog import REPORTS, build
from portal.reports.period import last_days, parse_period
from portal.reports.table import to_csv


@login_required
def report_list(request: PageRequest) -> HttpResponse:
    return render(request, "portal/report_list.html", {"reports": list(REPORTS.values())})


@login_required
def report_detail(request: PageRequest, slug: str) -> HttpResponse:
    report = REPORTS.get(slug)
    if report is None:
        raise Http404("No such report.")
    errors: dict[str, list[str]] = {}
    try:
        period = parse_period(request.GET)
        built = build(report, request.user, period, request.GET)
    except ValidationError as e:
        errors = e.message_dict
        period = last_days(30)
        built = build(report, request.user, period, {})
    if request.GET.get("format") == "csv" and not errors:
        response = HttpResponse(to_csv(built.table), content_type="text/csv; charset=utf-8")
        name = f"lifeboat-{slug}-{period.start.isoformat()}-{period.end.isoformat()}.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
    query = request.GET.copy()
    query["format"] = "csv"
    context = {
        "report": report,
        "reports": list(REPORTS.values()),
        "period": period,
        "built": built,
        "errors": errors,
        "given": request.GET,
        "csv_query": query.urlencode(),
    }
    return render(request, "portal/report_detail.html", context, status=400 if errors else 200)
