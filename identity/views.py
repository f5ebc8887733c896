"""Directory pages: the site admins' list of directories and group mappings, and the two
steps of an OpenID Connect sign-in (to the provider and back)."""

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from identity import oidc, services
from identity.backends import LOGIN_INFO
from identity.forms import DirectoryForm, GroupMappingForm, mapping_rows
from identity.models import Directory, DirectoryKind, GroupMapping
from portal.pages import PageRequest, apply_errors, done, error_text
from vaults import access, audit


def _require_admin(request: PageRequest) -> None:
    access.require_site(request.user, services.SITE)


@login_required
def directory_list(request: PageRequest) -> HttpResponse:
    _require_admin(request)
    context = {
        "directories": Directory.objects.all(),
        "mappings": mapping_rows(),
        "mapping_form": GroupMappingForm(),
    }
    return render(request, "identity/directory_list.html", context)


def _form_page(request: PageRequest, directory: Directory | None = None) -> HttpResponse:
    initial = DirectoryForm.initial_from(directory) if directory else None
    form = DirectoryForm(request.POST or None, initial=initial, editing=directory is not None)
    if request.method == "POST" and form.is_valid():
        fields = dict(form.cleaned_data)
        try:
            if directory is None:
                directory = services.create_directory(by=request.user, request=request, **fields)
            else:
                fields.pop("name"), fields.pop("kind")
                directory = services.update_directory(
                    directory, by=request.user, request=request, **fields
                )
        except ValidationError as exc:
            if directory is not None and directory.pk is not None:
                directory.refresh_from_db()
            apply_errors(form, exc)
        else:
            messages.success(request, f"Directory {directory.name} saved.")
            return done(request, reverse("directory-edit", args=[directory.name]))
    return render(request, "identity/directory_form.html", {"form": form, "directory": directory})


@login_required
def directory_create(request: PageRequest) -> HttpResponse:
    _require_admin(request)
    return _form_page(request)


@login_required
def directory_edit(request: PageRequest, name: str) -> HttpResponse:
    _require_admin(request)
    return _form_page(request, get_object_or_404(Directory, name=name))


@login_required
@require_POST
def directory_delete(request: PageRequest, name: str) -> HttpResponse:
    _require_admin(request)
    directory = get_object_or_404(Directory, name=name)
    try:
        services.delete_directory(directory, by=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return done(request, reverse("directory-edit", args=[name]))
    messages.success(request, f"Directory {name} deleted.")
    return done(request, reverse("directory-list"))


@login_required
@require_POST
def mapping_create(request: PageRequest) -> HttpResponse:
    _require_admin(request)
    form = GroupMappingForm(request.POST)
    if form.is_valid():
        try:
            m = services.create_mapping(by=request.user, request=request, **form.cleaned_data)
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            messages.success(request, f"Mapping {m} added.")
            return done(request, reverse("directory-list"))
    context = {
        "directories": Directory.objects.all(),
        "mappings": mapping_rows(),
        "mapping_form": form,
    }
    return render(request, "identity/directory_list.html", context, status=400)


@login_required
@require_POST
def mapping_delete(request: PageRequest, pk: int) -> HttpResponse:
    _require_admin(request)
    m = get_object_or_404(GroupMapping, pk=pk)
    services.delete_mapping(m, by=request.user, request=request)
    messages.success(request, f"Mapping {m} removed.")
    return done(request, reverse("directory-list"))


# -- OpenID Connect sign-in ----------------------------------------------------------------------


def _provider(name: str) -> Directory:
    return get_object_or_404(Directory, name=name, kind=DirectoryKind.OIDC, enabled=True)


def _refused(request: PageRequest, directory: Directory, exc: oidc.SignInRefused) -> HttpResponse:
    audit.record(
        "login.failure",
        actor=None,
        request=request,
        after={"method": "oidc", "directory": directory.name, "reason": exc.reason},
    )
    messages.error(request, f"Sign-in through {directory.title} refused: {exc}")
    return HttpResponseRedirect(reverse("login"))


@require_GET
def oidc_start(request: PageRequest, name: str) -> HttpResponse:
    directory = _provider(name)
    next_url = request.GET.get("next", "")
    if next_url and url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        request.session[oidc.NEXT_KEY] = next_url
    redirect_uri = request.build_absolute_uri(reverse("oidc-callback", args=[name]))
    try:
        return oidc.start(directory, request, redirect_uri)
    except oidc.SignInRefused as exc:
        return _refused(request, directory, exc)


@require_GET
def oidc_callback(request: PageRequest, name: str) -> HttpResponse:
    directory = _provider(name)
    try:
        user = oidc.sign_in(directory, request)
    except oidc.SignInRefused as exc:
        return _refused(request, directory, exc)
    next_url = request.session.pop(oidc.NEXT_KEY, "") or reverse("dashboard")
    # What the login audit records (identity.login_audit).
    setattr(user, LOGIN_INFO, {"method": "oidc", "directory": directory.name})
    login(request, user, backend="identity.backends.DirectoryBackend")
    return HttpResponseRedirect(next_url)
