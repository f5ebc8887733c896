"""Shared base for API views: JSON in, one permission class, vault from the URL."""

from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Model
from django.http.response import HttpResponseBase
from rest_framework.generics import GenericAPIView
from rest_framework.mixins import ListModelMixin
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request

from vaults.api.permissions import VaultAccess
from vaults.models import Vault


class ApiRequest(Request):
    """An API request behind `IsAuthenticated`: a signed-in user."""

    user: User


class ApiView(GenericAPIView):
    """JSON only (`DEFAULT_PARSER_CLASSES`), so every value has a JSON type the strict
    serializers can check."""

    permission_classes = [IsAuthenticated, VaultAccess]
    # Set by VaultAccess on URLs with a <vault_name>.
    vault: Vault | None = None

    @property
    def schema_only(self) -> bool:
        """True while drf-spectacular inspects the view without a real request."""
        return getattr(self, "swagger_fake_view", False)

    @property
    def url_vault(self) -> Vault:
        """The vault of a URL with a <vault_name>, as VaultAccess checked it."""
        if self.vault is None:
            raise ImproperlyConfigured(f"{type(self).__name__}: no <vault_name> in the URL")
        return self.vault


def changed_only(
    instance: Model, data: dict[str, Any], current: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The entries of `data` that differ from the instance's (or `current`'s) values, so a body
    sent back unchanged changes nothing and writes no audit record."""
    if current is None:
        current = {k: getattr(instance, k) for k in data}
    return {k: v for k, v in data.items() if current.get(k) != v}


class ApiListView(ListModelMixin, ApiView):
    """A paginated list (DRF's page envelope) on GET; subclasses add POST."""

    def get(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
        return self.list(request, *args, **kwargs)
