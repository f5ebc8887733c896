"""The login page's "Sign in with …" buttons: the enabled OpenID Connect providers."""

from django import template

from identity.models import Directory
from identity.oidc import providers

register = template.Library()


@register.simple_tag
def oidc_providers() -> list[Directory]:
    return providers()
