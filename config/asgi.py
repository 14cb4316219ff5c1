import os

# Not a supported entry point (README, Security): the request-body limits need WSGI, where they run before
# anything reads the body; Django's ASGI handler spools the whole body first.
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_asgi_application()
