"""Backup now, restore, and file-level recovery of one protected item's recovery points.

The views only translate: the domain functions (`jobs.backup_queue.backup_now`,
`jobs.restore.request_restore`, `vaults.file_recovery`) check the role again, validate every
value before a byte is written, and audit. Actions look recovery points up including
soft-deleted ones, so the answer says "undelete it first" instead of a bare 404.
"""

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import Http404, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.mixins import ListModelMixin
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from engine import fs as efs
from jobs.api.serializers import JobDetailSerializer
from jobs.backup_queue import backup_now
from jobs.drill import request_drill
from jobs.models import Job
from jobs.restore import request_restore
from portal.api.base import ApiListView, ApiRequest, ApiView
from vaults import access, file_recovery
from vaults.api.serializers import (
    BackupNowSerializer,
    DirectoryListingSerializer,
    DrillSerializer,
    FileQuerySerializer,
    FileRecoverySessionSerializer,
    RestoreSerializer,
)
from vaults.api.views import get_item
from vaults.file_recovery import display_name, is_utf8
from vaults.models import FileRecoverySession, RecoveryPoint

ACCEPTED = status.HTTP_202_ACCEPTED


def job_response(job: Job) -> Response:
    """202 with the new job as the job detail endpoint shows it."""
    job = Job.objects.select_related("created_by").prefetch_related("subtasks").get(pk=job.pk)
    return Response(JobDetailSerializer(job).data, status=ACCEPTED)


class RecoveryPointAction(ApiView):
    """A view under `.../recovery-points/<rp_id>/`."""

    def recovery_point(self) -> RecoveryPoint:
        """The URL's recovery point of the URL's item, soft-deleted or not; 404 otherwise."""
        user = self.request.user
        item = get_item(self.url_vault, user, self.kwargs["vm_name"])
        rp = (
            access.visible(RecoveryPoint.objects.all(), user)
            .filter(protected_item=item, pk=self.kwargs["rp_id"])
            .select_related("vault", "protected_item__vm__host", "protected_item__policy")
            .first()
        )
        if rp is None:
            raise Http404("No such recovery point.")
        return rp


# -- backup now -------------------------------------------------------------------------------


class BackupNowView(ApiView):
    serializer_class = BackupNowSerializer
    vault_actions = {"POST": "backup_now"}

    @extend_schema(
        responses={
            202: JobDetailSerializer,
            409: OpenApiResponse(description="A backup of the VM is already queued or running."),
        }
    )
    def post(self, request: ApiRequest, vault_name: str, vm_name: str) -> Response:
        """Back the VM up now (operators), kept until `retain_until` (default 30 days).
        One backup of a VM at a time: a second one while the first is queued or running
        answers 409."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        item = get_item(self.url_vault, request.user, vm_name)
        job = backup_now(
            item,
            by=request.user,
            request=request,
            retain_until=serializer.validated_data.get("retain_until"),
        )
        return job_response(job)


# -- restore drill ----------------------------------------------------------------------------


class DrillView(RecoveryPointAction):
    serializer_class = DrillSerializer
    vault_actions = {"POST": "drill"}

    @extend_schema(responses={202: JobDetailSerializer})
    def post(self, request: ApiRequest, vault_name: str, vm_name: str, rp_id: UUID) -> Response:
        """Run a restore drill of the recovery point now (operators): verify its chunks,
        restore it to scratch space, check its file systems with their own tools and read a
        sample of files. The RP's `verification`, `verified_at` and `drill` hold the outcome;
        a drill of the same RP and tier already queued or running is answered instead."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = request_drill(
            self.recovery_point(),
            by=request.user,
            request=request,
            tier=serializer.validated_data["tier"],
        )
        return job_response(job)


# -- restore ----------------------------------------------------------------------------------


class RestoreView(RecoveryPointAction):
    serializer_class = RestoreSerializer
    vault_actions = {"POST": "restore"}

    @extend_schema(responses={202: JobDetailSerializer})
    def post(self, request: ApiRequest, vault_name: str, vm_name: str, rp_id: UUID) -> Response:
        """Restore (operators): `restore_disks` writes disk images into a directory of a
        linked host, `create_vm` does so and registers a new VM there, `replace_disks`
        overwrites the stopped VM's own disks after a safety recovery point. Every value is
        checked before the job is queued; errors name the field (`target.path`, ...)."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        job = request_restore(
            self.recovery_point(),
            by=request.user,
            request=request,
            kind=data["kind"],
            luns=data.get("luns"),
            tier=data.get("tier", "auto"),
            target=data.get("target"),
            source=data.get("source", "primary"),
        )
        return job_response(job)


# -- file recovery ----------------------------------------------------------------------------


class FileRecoverySessionView(RecoveryPointAction):
    serializer_class = FileRecoverySessionSerializer
    vault_actions = {"GET": "file_recovery", "POST": "file_recovery", "DELETE": "file_recovery"}
    lookup_url_kwarg = "session_id"

    def get_queryset(self) -> QuerySet[FileRecoverySession]:
        """The caller's own sessions for the URL's recovery point, newest first."""
        if self.schema_only:
            return FileRecoverySession.objects.none()
        user = self.request.user
        assert isinstance(user, User)  # IsAuthenticated let the request in
        return FileRecoverySession.objects.filter(
            recovery_point=self.recovery_point(), user=user
        ).order_by("-created_at")


class FileRecoverySessionListView(ListModelMixin, FileRecoverySessionView):
    get = ApiListView.get

    @extend_schema(request=None, responses={201: FileRecoverySessionSerializer})
    def post(self, request: ApiRequest, vault_name: str, vm_name: str, rp_id: UUID) -> Response:
        """Open a read-only, audited file-recovery session (operators); it expires after
        12 hours (`expires_at`) or when ended with DELETE."""
        rp = self.recovery_point()
        session = file_recovery.open_session(rp, by=request.user, request=request)
        return Response(self.get_serializer(session).data, status=status.HTTP_201_CREATED)


class FileRecoverySessionDetailView(FileRecoverySessionView):
    def get(
        self, request: ApiRequest, vault_name: str, vm_name: str, rp_id: UUID, session_id: UUID
    ) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(responses={204: None})
    def delete(
        self, request: ApiRequest, vault_name: str, vm_name: str, rp_id: UUID, session_id: UUID
    ) -> Response:
        """End the session now; browsing the recovery point then needs a new one."""
        file_recovery.end_session(self.get_object(), by=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


def entry_json(e: efs.Entry) -> dict[str, Any]:
    """A directory entry; a name that is not UTF-8 on disk is shown with U+FFFD
    (`display_name`) and flagged `utf8: false`."""
    return {
        "name": display_name(e.name),
        "utf8": is_utf8(e.path),
        "path": display_name(e.path),
        "kind": e.kind,
        "size": e.size,
        "mtime": e.mtime.isoformat() if e.mtime else None,
        "mode": e.mode,
        "target": display_name(e.target) if e.target is not None else None,
    }


def partition_json(p: efs.Partition) -> dict[str, Any]:
    return {
        "index": p.index,
        "start": p.start,
        "length": p.length,
        "description": p.description,
        "fs_type": p.fs_type,
        "scheme": p.scheme,
    }


DAMAGED = OpenApiResponse(
    description="The recovery point could not be read (its stored data is damaged: a Sev-1 "
    "alert was raised); `detail` says what and where."
)


class FileListView(RecoveryPointAction):
    vault_actions = {"GET": "file_recovery"}
    serializer_class = DirectoryListingSerializer

    @extend_schema(
        parameters=[FileQuerySerializer],
        responses={200: DirectoryListingSerializer, 409: DAMAGED},
    )
    def get(self, request: ApiRequest, vault_name: str, vm_name: str, rp_id: UUID) -> Response:
        """List one directory of a disk in the recovery point (operators, with an open
        session). Not paginated: a listing is one directory, returned whole, with the
        disk's partitions (empty for a whole-disk file system, browsed without `partition`)."""
        rp = self.recovery_point()
        q = request.query_params
        disk, partition, path = q.get("disk"), q.get("partition"), q.get("path") or "/"
        entries = file_recovery.list_dir(
            rp, request.user, disk=disk, partition=partition, path=path
        )
        parts = file_recovery.partitions(rp, request.user, disk)
        return Response(
            {
                "disk": int(str(disk)),
                "partition": int(partition) if partition else None,
                "path": path,
                "partitions": [partition_json(p) for p in parts],
                "entries": [entry_json(e) for e in entries],
            }
        )


class AnyAccept(BaseContentNegotiation):
    """The download answers bytes whatever `Accept` says; its errors are still JSON."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class FileDownloadView(RecoveryPointAction):
    vault_actions = {"GET": "file_recovery"}
    content_negotiation_class = AnyAccept

    @extend_schema(
        parameters=[FileQuerySerializer],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, 409: DAMAGED},
    )
    def get(
        self, request: ApiRequest, vault_name: str, vm_name: str, rp_id: UUID
    ) -> StreamingHttpResponse:
        """Download a file as it is, or a folder as a zip archive (operators, with an open
        session). The body streams; the name is in Content-Disposition (RFC 6266/5987). A
        file has a Content-Length; damaged data met after the first bytes aborts the
        connection (a zip then has no central directory), so a cut-short body never passes
        for a whole one."""
        rp = self.recovery_point()
        q = request.query_params
        if not q.get("path"):
            raise serializers.ValidationError({"path": ["Give the path of a file or folder."]})
        download = file_recovery.download(
            rp,
            request.user,
            disk=q.get("disk"),
            partition=q.get("partition"),
            path=q["path"],
            request=request,
        )
        return download.response(download.name)
