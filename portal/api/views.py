"""Token endpoints: log in with a password once, then use `Authorization: Token <key>`.

A user with a second factor also sends a code from it as `otp` to get a token; the token
then works alone (the machine path), like every token before.
"""

from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied, Throttled
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from portal import health
from portal.api.base import ApiListView, ApiRequest, ApiView
from portal.api.serializers import StrictSerializer
from portal.client_address import client_ip
from portal.models import ApiToken
from portal.tokens import DEFAULT_NAME, issue_token, revoke_token
from security import lockout, second_factor
from security.logins import Method, succeeded


class LoginSerializer(StrictSerializer):
    username = serializers.CharField()
    password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})
    name = serializers.CharField(max_length=100, required=False, default=DEFAULT_NAME)
    # A code from the user's second factor (authenticator app or recovery code), if they have one.
    otp = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")


class TokenSerializer(serializers.ModelSerializer[ApiToken]):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = fields


class ObtainTokenView(ApiView):
    """Exchange a username and password for a new API token (its key is shown only here)."""

    # No session: a password is the whole credential here, so no CSRF token is needed.
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    serializer_class = LoginSerializer

    def get_authenticate_header(self, request: Request) -> str:
        # Bad credentials answer 401 (not 403), pointing at the scheme to use afterwards.
        return "Token"

    @extend_schema(
        responses={201: inline_serializer("NewToken", {"token": serializers.CharField()})}
    )
    def post(self, request: Request) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        lock = lockout.current_lock(data["username"], client_ip(request))
        if lock:
            raise Throttled(wait=(lock.until - timezone.now()).total_seconds(), detail=lock.message)
        user = authenticate(request, username=data["username"], password=data["password"])
        if not isinstance(user, User) or not user.is_active:
            raise AuthenticationFailed("Unable to log in with the given username and password.")
        method = Method.PASSWORD
        if second_factor.has_second_factor(user):
            method = second_factor.check(user, data["otp"], request=request, field="otp")
        elif second_factor.must_enrol(user):
            raise PermissionDenied(
                "This site requires a second factor for your account: set one up on the web "
                "page before asking for a token."
            )
        succeeded(request, user, method)
        _token, key = issue_token(user, name=data["name"], request=request)
        return Response({"token": key}, status=status.HTTP_201_CREATED)


class TokenListView(ApiListView):
    """The caller's own tokens, revoked ones included (with `revoked_at`)."""

    serializer_class = TokenSerializer
    request: ApiRequest

    def get_queryset(self) -> QuerySet[ApiToken]:
        if self.schema_only:
            return ApiToken.objects.none()
        return ApiToken.objects.filter(user=self.request.user).order_by("-created_at", "-id")


class TokenDetailView(ApiView):
    serializer_class = TokenSerializer
    lookup_url_kwarg = "token_id"
    request: ApiRequest

    def get_queryset(self) -> QuerySet[ApiToken]:
        if self.schema_only:
            return ApiToken.objects.none()
        return ApiToken.objects.filter(user=self.request.user)

    def get(self, request: Request, token_id: int) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(responses={204: None})
    def delete(self, request: ApiRequest, token_id: int) -> Response:
        """Revoke the token; it stays listed with `revoked_at` set."""
        revoke_token(self.get_object(), by=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class FindingSerializer(serializers.Serializer):
    what = serializers.CharField()
    ok = serializers.BooleanField()
    text = serializers.CharField()
    free_bytes = serializers.IntegerField(allow_null=True)
    seconds = serializers.FloatField(allow_null=True)


class CheckSerializer(serializers.Serializer):
    name = serializers.CharField()
    ok = serializers.BooleanField()
    serving = serializers.BooleanField(help_text="A failure makes /healthz answer 503.")
    findings = FindingSerializer(many=True)


class HealthSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    at = serializers.DateTimeField()
    checks = CheckSerializer(many=True)


class HealthView(ApiView):
    """Every health check with what it found (site administrators): the database, each
    vault store's reach and free space, queue ages, worker heartbeats."""

    serializer_class = HealthSerializer
    site_actions = {"GET": "view_health"}

    def get(self, request: ApiRequest) -> Response:
        return Response(self.get_serializer(health.check()).data)
