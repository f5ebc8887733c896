"""NUL characters never reach a view.

PostgreSQL text cannot hold NUL and every file-system call raises on it, so a NUL that reached
a query or a path would be a 500 (or, on SQLite, a name that matches nothing by accident). The
address, the query string and the cookies (a session key is looked up in the database) are
checked here for pages and API alike, and the form fields of pages; the API takes only JSON,
whose parser checks it (`portal.api.parsers`).
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import render

NUL = "\x00"
IN_ADDRESS = "The address and parameter names must not contain NUL characters."
IN_COOKIES = "Cookies must not contain NUL characters."
IN_VALUE = "Must not contain NUL characters."


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def nul_error(request: HttpRequest) -> dict[str, str | list[str]] | None:
    """The first NUL in the request as the API's error body, or None."""
    if NUL in request.path:
        return {"detail": IN_ADDRESS}
    if any(NUL in name or NUL in value for name, value in request.COOKIES.items()):
        return {"detail": IN_COOKIES}
    # request.POST is empty (and reads nothing) unless the body is a form. The API must not
    # read one: DRF would then take it for an empty body instead of answering 415.
    for params in (request.GET,) if is_api(request) else (request.GET, request.POST):
        for name, values in params.lists():
            if NUL in name:
                return {"detail": IN_ADDRESS}
            if any(NUL in v for v in values):
                return {name: [IN_VALUE]}
    return None


class RefuseNul:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        error = nul_error(request)
        if error is None:
            return self.get_response(request)
        if is_api(request):
            return JsonResponse(error, status=400)
        ((field, message),) = error.items()
        text = message if field == "detail" else f"{field}: {message[0]}"
        return HttpResponseBadRequest(text, content_type="text/plain; charset=utf-8")


class ErrorPages:
    """Pages answer a method they do not take (405) with the styled error page and the
    navigation, not Django's empty body; 403, 404 and 500 have their templates
    (`templates/403.html` …) through Django's own handlers. The API keeps its JSON errors."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code != 405 or is_api(request) or response.content:
            return response
        page = render(
            request,
            "405.html",
            {"method": request.method, "allowed": response.get("Allow", "")},
            status=405,
        )
        page["Allow"] = response.get("Allow", "")
        return page
