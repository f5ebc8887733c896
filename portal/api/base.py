"""Shared base for API views: JSON in, one permission class, vault from the URL."""

from rest_framework.generics import GenericAPIView
from rest_framework.mixins import ListModelMixin
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated

from vaults.api.permissions import VaultAccess


class ApiView(GenericAPIView):
    """JSON only, so every value has a JSON type the strict serializers can check."""

    parser_classes = [JSONParser]
    permission_classes = [IsAuthenticated, VaultAccess]
    # Set by VaultAccess on URLs with a <vault_name>.
    vault = None

    @property
    def schema_only(self) -> bool:
        """True while drf-spectacular inspects the view without a real request."""
        return getattr(self, "swagger_fake_view", False)


class ApiListView(ListModelMixin, ApiView):
    """A paginated list (DRF's page envelope) on GET; subclasses add POST."""

    def get(self, request, *args, **kwargs):
        return self.list(request, *args, **kwargs)
