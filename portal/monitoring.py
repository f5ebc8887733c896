"""What load balancers and Prometheus ask: `/healthz` and `/metrics`. Neither is a page nor an
API endpoint: no session or login redirect for the balancer, no DRF for the scraper."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from portal import health, metrics
from portal.client_address import client_ip
from vaults import access


@never_cache
@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    """Unauthenticated: ok or failed per check, nothing more (no locations, no errors). 503
    when a check this web server needs to serve fails (`health.SERVING`)."""
    found = health.check()
    body = {
        "status": "ok" if found.serving_ok else "fail",
        "checks": {c.name: "ok" if c.ok else "fail" for c in found.checks},
    }
    return JsonResponse(body, status=200 if found.serving_ok else 503)


def _bearer(request: HttpRequest) -> str | None:
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


@never_cache
@require_safe
def prometheus(request: HttpRequest) -> HttpResponse:
    if not access.can_scrape_metrics(request.user, _bearer(request), client_ip(request)):
        return HttpResponse(
            "Metrics need the metrics token (Authorization: Bearer ...), an allowed address "
            "or a site administrator.\n",
            status=403,
            content_type="text/plain",
        )
    return HttpResponse(generate_latest(metrics.registry()), content_type=CONTENT_TYPE_LATEST)
