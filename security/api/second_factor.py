"""Second factor over REST, for site admins: who must have one, and resetting a user's
devices. Enrolment is a web page (a person scans a QR code); API tokens carry no second
factor (the machine path)."""

from django.contrib.auth.models import User
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api.base import ApiRequest, ApiView
from portal.api.serializers import StrictSerializer
from security import second_factor
from security.models import SecondFactorRequired

SITE = "manage_second_factor"


class RequiredSerializer(StrictSerializer):
    second_factor_required = serializers.ChoiceField(choices=SecondFactorRequired.choices)


class SecondFactorSettingView(ApiView):
    """Who must have a second factor: `nobody`, `site_admins` or `everyone` (local accounts;
    one without is sent to enrolment after the password at the next login)."""

    serializer_class = RequiredSerializer
    site_actions = {"GET": SITE, "PUT": SITE}

    def get(self, request: Request) -> Response:
        return Response({"second_factor_required": second_factor.required()})

    def put(self, request: ApiRequest) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        site = second_factor.set_required(
            serializer.validated_data["second_factor_required"], by=request.user, request=request
        )
        return Response({"second_factor_required": site.second_factor_required})


class SecondFactorResetView(ApiView):
    site_actions = {"POST": SITE}

    @extend_schema(
        request=None,
        responses={
            200: inline_serializer(
                "SecondFactorReset", {"apps_removed": serializers.IntegerField()}
            )
        },
    )
    def post(self, request: ApiRequest, username: str) -> Response:
        """Remove every authenticator app and recovery code of the user (they enrol again)."""
        user = get_object_or_404(User, username=username)
        removed = second_factor.reset(user, by=request.user, request=request)
        return Response({"apps_removed": removed})
