"""WSGI entry point for gunicorn (`gunicorn config.wsgi`).

Django's application behind config.request_body's edge, which reads chunked
bodies and drains (or closes on) bodies the application did not read.
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from config.request_body import RequestBodyEdge

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = RequestBodyEdge(get_wsgi_application())
