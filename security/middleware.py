"""A signed-in user whom the site requires to have a second factor, and who has none, may
only enrol one (or log out) until they have; the API answers 403 to their session.

The password step marks the session (`MUST_ENROL`), so this costs no query per request;
confirming an authenticator app clears the mark. API tokens are not sessions: the machine
path is unchanged.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import Resolver404, resolve

# A signed-in user who must enrol a second factor before anything else (session key).
MUST_ENROL = "lifeboat_must_enrol"

# The pages such a user may open.
ENROLMENT_PAGES = {
    "account-second-factor",
    "account-second-factor-app",
    "logout",
    "login",
    "login-code",
}


class SecondFactorEnrolment:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.session.get(MUST_ENROL) and request.user.is_authenticated:
            try:
                name = resolve(request.path_info).url_name
            except Resolver404:
                name = None
            if name not in ENROLMENT_PAGES:
                if request.path_info.startswith("/api/"):
                    return JsonResponse(
                        {"detail": "Set up a second factor on the web page first."}, status=403
                    )
                return redirect("account-second-factor")
        return self.get_response(request)
