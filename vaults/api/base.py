"""What the vault API views share: the request they serve and the URL's vault."""

from django.contrib.auth.models import User
from rest_framework.request import Request

from vaults.models import Vault


class AuthedRequest(Request):
    """A request of a signed-in user (`IsAuthenticated` comes first on every view)."""

    user: User


class UrlVault:
    """For views under `.../vaults/<vault_name>/`: `VaultAccess` found the URL's vault visible
    and left it on the view."""

    @property
    def url_vault(self) -> Vault:
        vault = getattr(self, "vault", None)
        assert isinstance(vault, Vault), "VaultAccess sets the vault of every vault URL"
        return vault
