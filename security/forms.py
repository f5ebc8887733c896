"""The login form with the lockout said in words (the backend enforces it either way)."""

from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm

from portal.client_address import client_ip
from security import lockout


class LockoutAuthenticationForm(AuthenticationForm):
    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        if username:
            lock = lockout.current_lock(username, client_ip(self.request))
            if lock:
                raise forms.ValidationError(lock.message, code="locked")
        return super().clean()
