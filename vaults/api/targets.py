"""Storage targets through the API (site administrators only): CRUD and the Test action."""

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api.base import ApiListView, ApiRequest, ApiView, changed_only
from portal.api.serializers import StrictModelSerializer, StrictSerializer
from vaults.models import StorageTarget
from vaults.services import targets as services

SITE = "manage_storage_targets"


class StorageTargetSerializer(StrictModelSerializer):
    credentials_env = serializers.DictField(
        child=serializers.CharField(max_length=128),
        required=False,
        help_text="Credential key → the NAME of the environment variable the workers read "
        "(S3: access_key_id, secret_access_key[, session_token]; Azure: account_name + "
        "account_key, or sas_token). Never the secret.",
    )

    class Meta:
        model = StorageTarget
        fields = [
            "id",
            "name",
            "kind",
            "endpoint",
            "region",
            "path_style",
            "credentials_source",
            "credentials_env",
            "credentials_file",
            "object_lock",
            "created_at",
        ]
        read_only_fields = ["id", "created_at"]
        # Name rules and uniqueness are checked by the service.
        extra_kwargs: dict[str, dict[str, object]] = {"name": {"validators": []}}


class TargetTestSerializer(StrictSerializer):
    location = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        help_text="s3://bucket/prefix or az://container/prefix; default: a vault's store there.",
    )


class TargetCheckSerializer(serializers.Serializer):
    job = serializers.IntegerField(help_text="The test_target job a worker runs.")
    status = serializers.CharField(help_text="The job's status.")
    finished = serializers.BooleanField()
    ok = serializers.BooleanField(
        allow_null=True, help_text="Whether the location opened; null until the job finished."
    )
    location = serializers.CharField()
    detail = serializers.CharField(help_text="What was found, or the exact error.")
    worker = serializers.CharField(help_text="The worker that opened the location.")
    url = serializers.SerializerMethodField(help_text="Where the answer is read.")

    def get_url(self, check: services.TargetCheck) -> str:
        return reverse("api-storage-target-test-result", args=[self.context["name"], check.job])


class StorageTargetListView(ApiListView):
    serializer_class = StorageTargetSerializer
    site_actions = {"GET": SITE, "POST": SITE}

    def get_queryset(self) -> QuerySet[StorageTarget]:
        return StorageTarget.objects.order_by("name")

    @extend_schema(responses={201: StorageTargetSerializer})
    def post(self, request: ApiRequest) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        target = services.create_target(
            by=request.user, request=request, **serializer.validated_data
        )
        return Response(self.get_serializer(target).data, status=status.HTTP_201_CREATED)


class StorageTargetDetailView(ApiView):
    serializer_class = StorageTargetSerializer
    site_actions = {"GET": SITE, "PATCH": SITE, "DELETE": SITE}
    lookup_field = "name"
    lookup_url_kwarg = "name"

    def get_queryset(self) -> QuerySet[StorageTarget]:
        return StorageTarget.objects.all()

    def get(self, request: Request, name: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    def patch(self, request: ApiRequest, name: str) -> Response:
        target = self.get_object()
        serializer = self.get_serializer(target, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes: dict[str, Any] = changed_only(target, dict(serializer.validated_data))
        if changes:
            target = services.update_target(target, by=request.user, request=request, **changes)
        return Response(self.get_serializer(target).data)

    @extend_schema(responses={204: None})
    def delete(self, request: ApiRequest, name: str) -> Response:
        """Delete a storage target that no vault names."""
        services.delete_target(self.get_object(), by=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class StorageTargetTestView(ApiView):
    serializer_class = TargetTestSerializer
    site_actions = {"POST": SITE}

    @extend_schema(responses={202: TargetCheckSerializer})
    def post(self, request: ApiRequest, name: str) -> Response:
        """Queue a Test: a worker opens the location with the target's credentials as the
        workers read them. 202 with the job; its answer is read at `url`."""
        target = get_object_or_404(StorageTarget, name=name)
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        check = services.check_target(
            target,
            by=request.user,
            request=request,
            location=serializer.validated_data.get("location", "").strip(),
        )
        body = TargetCheckSerializer(check, context={"name": target.name}).data
        return Response(body, status=status.HTTP_202_ACCEPTED)


class StorageTargetTestResultView(ApiView):
    serializer_class = TargetCheckSerializer
    site_actions = {"GET": SITE}

    def get(self, request: ApiRequest, name: str, job_id: int) -> Response:
        """A Test's answer: `ok` null while its job waits or runs, then true or false with
        what was found or the exact error, and the worker that looked."""
        target = get_object_or_404(StorageTarget, name=name)
        check = services.target_check(target, job_id, by=request.user)
        return Response(TargetCheckSerializer(check, context={"name": target.name}).data)
