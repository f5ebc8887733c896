"""`runserver` with the server of `portal.server`: a response that fails part-way resets its
connection instead of passing for complete (static files still come from WhiteNoise)."""

from whitenoise.runserver_nostatic.management.commands.runserver import Command as Base

from portal.server import WSGIServer


class Command(Base):
    server_cls = WSGIServer
