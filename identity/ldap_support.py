"""Is LDAP sign-in installed here?

`python-ldap` (under django-auth-ldap) has no wheel: it builds against OpenLDAP's and SASL's
headers, which a fresh machine may lack. So it is the `ldap` extra, installed by `make` when the
headers are there, and everything else works without it: an LDAP realm cannot be added and the
login form asks no realm.
"""

from importlib.util import find_spec

AVAILABLE = find_spec("ldap") is not None and find_spec("django_auth_ldap") is not None

MISSING = (
    "LDAP sign-in is not installed on this server: install the OpenLDAP and SASL headers "
    "(apt install libldap2-dev libsasl2-dev), then run make again (it adds python-ldap)."
)
