"""The API's one permission class. It decides nothing itself: it asks `vaults.access`.

A view declares which action each HTTP method needs:

    vault_actions = {"GET": "view", "POST": "protect"}      # on .../vaults/<vault_name>/...
    site_actions = {"POST": "manage_inventory"}             # site administrators only
    object_site_actions = {"PATCH": "manage_inventory"}     # the same, checked on the object,
                                                            # so an invisible object stays 404

On a vault-scoped URL a non-member gets 404 for every method (the vault does not exist for
them) and a member whose role is too low gets 403. The vault is then left on `view.vault`.
"""

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from vaults import access

SAFE = ("GET", "HEAD", "OPTIONS")


def _action(actions: dict[str, str], method: str | None) -> str | None:
    if method in actions:
        return actions[method]
    if method in SAFE:
        return actions.get("GET")
    return None


class VaultAccess(BasePermission):
    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        name = view.kwargs.get("vault_name")
        if name is not None:
            # Visibility first: an outsider learns nothing, not even which role is missing.
            vault = access.get_vault(user, name, "view")
            action = _action(getattr(view, "vault_actions", {}), request.method)
            if action is not None:
                access.require(user, vault, action)
            # ApiView declares `vault`; a permission class sees any APIView.
            setattr(view, "vault", vault)  # noqa: B010
        site_action = _action(getattr(view, "site_actions", {}), request.method)
        if site_action is not None:
            access.require_site(user, site_action)
        return True

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        site_action = _action(getattr(view, "object_site_actions", {}), request.method)
        if site_action is not None:
            access.require_site(request.user, site_action)
        return True
