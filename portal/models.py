"""API tokens: shown once, stored as a hash, revocable, with their last use recorded.

A token belongs to the password it was issued under: it records a fingerprint of the user's
password hash, and a token whose fingerprint is no longer the user's is refused and revoked,
whatever wrote the new password (`portal.tokens` revokes them as soon as it is saved).
"""

import hashlib
import hmac
import secrets

from django.conf import settings
from django.contrib.auth.models import User
from django.db import models
from django.utils import timezone


def hash_token(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def password_fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()


class ApiToken(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    # Only the hash is kept; the first characters help a user tell tokens apart.
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # `password_fingerprint` of the user's password hash when the token was issued.
    password_fingerprint = models.CharField(max_length=64)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, user: User, name: str) -> tuple["ApiToken", str]:
        """Create a token and return it with its clear key (shown to the user once)."""
        key = secrets.token_hex(20)
        token = cls.objects.create(
            user=user,
            name=name,
            key_hash=hash_token(key),
            prefix=key[:8],
            password_fingerprint=password_fingerprint(user.password),
        )
        return token, key

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def outlived_its_password(self) -> bool:
        return not hmac.compare_digest(
            self.password_fingerprint, password_fingerprint(self.user.password)
        )

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])
