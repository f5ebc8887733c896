"""The WSGI application of every server: `make run` and production (gunicorn, see
`portal/gunicorn_conf.py`) and `make dev` (`manage.py runserver`)."""

import os

from django.core.wsgi import get_wsgi_application

from portal.server import ResetOnFailure

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
# A body that fails part-way resets the connection under gunicorn too (portal/server.py).
application = ResetOnFailure(get_wsgi_application())
