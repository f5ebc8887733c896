"""Shared base for API views: JSON in, one permission class, vault from the URL."""

from rest_framework.generics import GenericAPIView
from rest_framework.mixins import ListModelMixin
from rest_framework.permissions import IsAuthenticated

from vaults.api.permissions import VaultAccess


class ApiView(GenericAPIView):
    """JSON only (`DEFAULT_PARSER_CLASSES`), so every value has a JSON type the strict
    serializers can check."""

    permission_classes = [IsAuthenticated, VaultAccess]
    # Set by VaultAccess on URLs with a <vault_name>.
    vault = None

    @property
    def schema_only(self) -> bool:
        """True while drf-spectacular inspects the view without a real request."""
        return getattr(self, "swagger_fake_view", False)


def changed_only(instance, data: dict, current: dict | None = None) -> dict:
    """The entries of `data` that differ from the instance's (or `current`'s) values, so a body
    sent back unchanged changes nothing and writes no audit record."""
    if current is None:
        current = {k: getattr(instance, k) for k in data}
    return {k: v for k, v in data.items() if current.get(k) != v}


class ApiListView(ListModelMixin, ApiView):
    """A paginated list (DRF's page envelope) on GET; subclasses add POST."""

    def get(self, request, *args, **kwargs):
        return self.list(request, *args, **kwargs)
