from rest_framework.test import APIClient

from vaults import access


class JsonClient(APIClient):
    """Sends JSON by default (the API accepts nothing else)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.default_format = "json"


class PersonaClient(JsonClient):
    """Acts as one user; each request starts with no cached roles, like a real request
    (which loads its user afresh)."""

    persona = None

    def request(self, **kwargs):
        if self.persona is not None:
            access.forget(self.persona)
        return super().request(**kwargs)


def persona_client(user=None) -> PersonaClient:
    """An API client acting as `user` (None: anonymous)."""
    client = PersonaClient()
    if user is not None:
        client.persona = user
        client.force_authenticate(user)
    return client
