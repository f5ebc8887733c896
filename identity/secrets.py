"""A directory's secret (OIDC client secret, LDAP bind password), read where it is used from the
environment variable or file the directory names; never stored in the database."""

import os
from pathlib import Path

from identity.models import Directory, SecretSource


class SecretUnavailable(Exception):
    """The named variable or file is missing or empty; the message names which."""


def read_secret(directory: Directory) -> str:
    """The secret, or "" when the directory names none (anonymous bind, public client)."""
    if not directory.secret_name:
        return ""
    if directory.secret_source == SecretSource.FILE:
        try:
            value = Path(directory.secret_name).read_text().strip()
        except OSError as exc:
            raise SecretUnavailable(
                f"directory {directory.name}: secret file {directory.secret_name} "
                f"cannot be read ({exc.strerror})"
            ) from None
    else:
        value = os.environ.get(directory.secret_name, "")
    if not value:
        raise SecretUnavailable(
            f"directory {directory.name}: {directory.secret_source} {directory.secret_name} is empty"
        )
    return value
