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


class CodeForm(forms.Form):
    """A code from the user's authenticator app, or one of their recovery codes."""

    code = forms.CharField(
        max_length=32,
        label="Code",
        strip=True,
        help_text="The 6-digit code of your authenticator app, or a recovery code.",
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "text", "autofocus": True}
        ),
    )


class EnrolForm(forms.Form):
    name = forms.CharField(
        max_length=64,
        required=False,
        label="Name",
        help_text="Which app or phone, e.g. “work phone”.",
    )
    code = forms.CharField(
        max_length=16,
        label="Code from the app",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )
