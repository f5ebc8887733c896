"""Storage targets (site administrators only; others get 403): list, create, edit, delete,
and the Test button: a worker opens a location with the target's credentials, and the page
polls for its answer."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HTMX_STOP_POLLING

from portal.pages import PageRequest, apply_errors, done, error_text, render_page
from vaults import access
from vaults.forms import StorageTargetForm, TargetTestForm
from vaults.models import StorageTarget
from vaults.services import targets as services


def _require_admin(request: PageRequest) -> None:
    access.require_site(request.user, "manage_storage_targets")


@login_required
def target_list(request: PageRequest) -> HttpResponse:
    _require_admin(request)
    rows = StorageTarget.objects.annotate(
        vault_count=Count("vaults", distinct=True)
        + Count("secondary_vaults", distinct=True, filter=~Q(secondary_vaults=None))
    ).order_by("name")
    return render(request, "vaults/target_list.html", {"targets": rows})


def _form_page(request: PageRequest, target: StorageTarget | None = None) -> HttpResponse:
    initial = StorageTargetForm.initial_from(target) if target else None
    form = StorageTargetForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            if target is None:
                target = services.create_target(
                    by=request.user, request=request, **form.cleaned_data
                )
            else:
                target = services.update_target(
                    target, by=request.user, request=request, **form.cleaned_data
                )
        except ValidationError as exc:
            if target is not None and target.pk is not None:
                target.refresh_from_db()
            apply_errors(form, exc)
        else:
            messages.success(request, f"Storage target {target.name} saved.")
            return done(request, reverse("target-edit", args=[target.name]))
    context = {"form": form, "target": target, "test_form": TargetTestForm()}
    return render(request, "vaults/target_form.html", context)


@login_required
def target_create(request: PageRequest) -> HttpResponse:
    _require_admin(request)
    return _form_page(request)


@login_required
def target_edit(request: PageRequest, name: str) -> HttpResponse:
    _require_admin(request)
    return _form_page(request, get_object_or_404(StorageTarget, name=name))


@login_required
@require_POST
def target_delete(request: PageRequest, name: str) -> HttpResponse:
    _require_admin(request)
    target = get_object_or_404(StorageTarget, name=name)
    try:
        services.delete_target(target, by=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return done(request, reverse("target-edit", args=[target.name]))
    messages.success(request, f"Storage target {name} deleted.")
    return done(request, reverse("target-list"))


def _check_page(
    request: PageRequest, target: StorageTarget, status: int = 200, **context: object
) -> HttpResponse:
    page = {
        "form": StorageTargetForm(initial=StorageTargetForm.initial_from(target)),
        "target": target,
        "test_form": TargetTestForm(),
        **context,
    }
    return render_page(request, "vaults/target_form.html", page, partial="check", status=status)


@login_required
@require_POST
def target_test(request: PageRequest, name: str) -> HttpResponse:
    """Queue the Test on a worker; the answer (in place with htmx, polling its result)."""
    _require_admin(request)
    target = get_object_or_404(StorageTarget, name=name)
    test_form = TargetTestForm(request.POST)
    if not test_form.is_valid():
        return _check_page(request, target, test_form=test_form)
    try:
        check = services.check_target(
            target,
            by=request.user,
            request=request,
            location=test_form.cleaned_data["location"].strip(),
        )
    except ValidationError as exc:
        return _check_page(request, target, test_form=test_form, check_error=error_text(exc))
    return _check_page(request, target, test_form=test_form, check=check)


@login_required
def target_test_result(request: PageRequest, name: str, job_id: int) -> HttpResponse:
    """A Test's answer; polled by htmx while its job runs, then 286 (stop polling)."""
    _require_admin(request)
    target = get_object_or_404(StorageTarget, name=name)
    check = services.target_check(target, job_id, by=request.user)
    stop = bool(request.htmx) and check.finished
    return _check_page(request, target, HTMX_STOP_POLLING if stop else 200, check=check)
