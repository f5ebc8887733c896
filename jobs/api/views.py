from typing import Any

from django.contrib.auth.models import User
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from jobs.api.serializers import JobDetailSerializer, JobFilterSerializer, JobSerializer
from jobs.models import Job
from jobs.runner import cancel_job
from portal.api.base import ApiListView, ApiView
from vaults import access


def signed_in(request: Request) -> User:
    """The request's user, who is signed in (IsAuthenticated lets nobody else through)."""
    if not isinstance(request.user, User):
        raise NotAuthenticated()
    return request.user


class VaultJobsView(ApiView):
    """Jobs of the URL's vault show hook details to those who may `view_hook_details`."""

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        if self.vault is not None:
            context["hook_details"] = access.can(self.request.user, self.vault, "view_hook_details")
        return context


class JobListView(VaultJobsView, ApiListView):
    """The vault's jobs, newest first."""

    serializer_class = JobSerializer
    vault_actions = {"GET": "view"}

    def get_queryset(self) -> QuerySet[Job]:
        if self.schema_only:
            return Job.objects.none()
        return (
            access.visible(Job.objects.all(), self.request.user)
            .filter(vault=self.vault)
            .select_related("created_by")
        )

    @extend_schema(parameters=[JobFilterSerializer])
    def get(self, request: Request, vault_name: str) -> Response:
        return self.list(request)

    def filter_queryset(self, qs: QuerySet[Any, Any]) -> QuerySet[Any, Any]:
        f = JobFilterSerializer.values(self.request.query_params)
        if "status" in f:
            qs = qs.filter(status__in=f["status"])
        if "operation" in f:
            qs = qs.filter(operation__in=f["operation"])
        if "vm" in f:
            qs = qs.filter(vm_name=f["vm"])
        if "since" in f:
            qs = qs.filter(created_at__gte=f["since"])
        return qs.order_by("-created_at", "-id")


class JobDetailView(VaultJobsView):
    serializer_class = JobDetailSerializer
    vault_actions = {"GET": "view"}
    lookup_url_kwarg = "job_id"

    def get_queryset(self) -> QuerySet[Job]:
        if self.schema_only:
            return Job.objects.none()
        return (
            access.visible(Job.objects.all(), self.request.user)
            .filter(vault=self.vault)
            .select_related("created_by")
            .prefetch_related("subtasks")
        )

    def get(self, request: Request, job_id: int, vault_name: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)


class JobCancelView(VaultJobsView):
    serializer_class = JobDetailSerializer
    vault_actions = {"POST": "cancel_job"}
    lookup_url_kwarg = "job_id"
    get_queryset = JobDetailView.get_queryset

    @extend_schema(
        request=None,
        responses={
            202: JobDetailSerializer,
            409: OpenApiResponse(description="The job has already finished."),
        },
    )
    def post(self, request: Request, job_id: int, vault_name: str) -> Response:
        """Cancel a job (operators): a queued job is cancelled at once, a running one becomes
        `cancelling` and stops at its next check. A finished job answers 409."""
        cancel_job(self.get_object(), by=signed_in(request), request=request)
        job = self.get_object()
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED)
