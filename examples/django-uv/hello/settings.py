"""A minimal Django site: one view, no database."""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "change-me-in-the-environment")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "hello.urls"
WSGI_APPLICATION = "hello.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
