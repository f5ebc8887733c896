"""The login form with the lockout said in words (the backend enforces it either way)."""

from django import forms
from django.contrib.auth.forms import AuthenticationForm

from security import lockout


class LockoutAuthenticationForm(AuthenticationForm):
    def clean(self):
        username = self.cleaned_data.get("username")
        if username:
            until = lockout.locked_until(username, lockout.request_ip(self.request))
            if until:
                raise forms.ValidationError(lockout.lock_message(until), code="locked")
        return super().clean()
