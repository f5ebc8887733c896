"""`Authorization: Token <key>` against hashed, revocable API tokens of the current password
(and, for directory users, of a directory that still vouches for them: identity.freshness)."""

from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from identity.freshness import token_refusal
from portal.client_address import client_ip
from portal.models import ApiToken, hash_token
from portal.tokens import revoke_tokens_of_old_passwords


class ApiTokenAuthentication(authentication.TokenAuthentication):
    keyword = "Token"

    def authenticate(self, request: Request) -> tuple[User, ApiToken] | None:
        result = super().authenticate(request)
        if result is not None:
            user, token = result
            # Record the last use at most once a minute, to spare the database a write per call.
            now = timezone.now()
            if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
                ApiToken.objects.filter(pk=token.pk).update(
                    last_used_at=now, last_used_ip=client_ip(request)
                )
        return result

    def authenticate_credentials(self, key: str) -> tuple[User, ApiToken]:
        try:
            # The user's directory account comes along for `token_refusal` (one query, not two).
            token = ApiToken.objects.select_related(
                "user", "user__directory_account__directory"
            ).get(key_hash=hash_token(key))
        except ApiToken.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        if not token.is_active:
            raise exceptions.AuthenticationFailed("Token revoked.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        if token.outlived_its_password:
            # The hash was written without a save (no signal revoked it): revoke it now.
            revoke_tokens_of_old_passwords(token.user)
            raise exceptions.AuthenticationFailed("Token revoked: the password changed.")
        # A directory user's token lasts while the directory vouches for the user.
        refusal = token_refusal(token.user)
        if refusal:
            raise exceptions.AuthenticationFailed(refusal)
        return (token.user, token)
