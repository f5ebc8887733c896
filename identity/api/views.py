"""Directories and group mappings through the API (site administrators only)."""

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from identity import services
from identity.models import Directory, GroupMapping
from identity.services import DIRECTORY_FIELDS, SITE
from portal.api.base import ApiListView, ApiRequest, ApiView, changed_only
from portal.api.serializers import StrictModelSerializer


class DirectorySerializer(StrictModelSerializer):
    class Meta:
        model = Directory
        fields = ["id", *DIRECTORY_FIELDS, "created_at"]
        read_only_fields = ["id", "created_at"]
        # Name rules and uniqueness are checked by the service.
        extra_kwargs: dict[str, dict[str, object]] = {
            "name": {"validators": []},
            "secret_name": {
                "help_text": "The NAME of the environment variable or the path of the file "
                "holding the client secret or bind password; never the secret."
            },
        }


class GroupMappingSerializer(StrictModelSerializer):
    directory = serializers.SlugRelatedField(
        slug_field="name", queryset=Directory.objects.all(), help_text="The directory's name."
    )

    class Meta:
        model = GroupMapping
        fields = ["id", "directory", "group", "vault_pattern", "role", "site_admin", "created_at"]
        read_only_fields = ["id", "created_at"]
        # Uniqueness is checked by the service (its error names the field).
        validators: list[object] = []


class DirectoryListView(ApiListView):
    serializer_class = DirectorySerializer
    site_actions = {"GET": SITE, "POST": SITE}

    def get_queryset(self) -> QuerySet[Directory]:
        return Directory.objects.order_by("name")

    @extend_schema(responses={201: DirectorySerializer})
    def post(self, request: ApiRequest) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        d = services.create_directory(by=request.user, request=request, **serializer.validated_data)
        return Response(self.get_serializer(d).data, status=status.HTTP_201_CREATED)


class DirectoryDetailView(ApiView):
    serializer_class = DirectorySerializer
    site_actions = {"GET": SITE, "PATCH": SITE, "DELETE": SITE}
    lookup_field = "name"
    lookup_url_kwarg = "name"

    def get_queryset(self) -> QuerySet[Directory]:
        return Directory.objects.all()

    def get(self, request: Request, name: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    def patch(self, request: ApiRequest, name: str) -> Response:
        d = self.get_object()
        serializer = self.get_serializer(d, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes: dict[str, Any] = changed_only(d, dict(serializer.validated_data))
        if changes:
            d = services.update_directory(d, by=request.user, request=request, **changes)
        return Response(self.get_serializer(d).data)

    @extend_schema(responses={204: None})
    def delete(self, request: ApiRequest, name: str) -> Response:
        """Delete a directory nobody signed in through (disable it otherwise)."""
        services.delete_directory(self.get_object(), by=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class GroupMappingListView(ApiListView):
    serializer_class = GroupMappingSerializer
    site_actions = {"GET": SITE, "POST": SITE}

    def get_queryset(self) -> QuerySet[GroupMapping]:
        return GroupMapping.objects.select_related("directory").order_by("pk")

    @extend_schema(responses={201: GroupMappingSerializer})
    def post(self, request: ApiRequest) -> Response:
        """Map a directory group to a role on vaults matching a pattern and/or site admin;
        applied at once to every directory user."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        m = services.create_mapping(by=request.user, request=request, **serializer.validated_data)
        return Response(self.get_serializer(m).data, status=status.HTTP_201_CREATED)


class GroupMappingDetailView(ApiView):
    serializer_class = GroupMappingSerializer
    site_actions = {"GET": SITE, "DELETE": SITE}

    def get(self, request: Request, mapping_id: int) -> Response:
        m = get_object_or_404(GroupMapping.objects.select_related("directory"), pk=mapping_id)
        return Response(self.get_serializer(m).data)

    @extend_schema(responses={204: None})
    def delete(self, request: ApiRequest, mapping_id: int) -> Response:
        """Remove the mapping and, at once, the memberships only it granted."""
        m = get_object_or_404(GroupMapping.objects.select_related("directory"), pk=mapping_id)
        services.delete_mapping(m, by=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)
