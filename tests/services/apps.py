"""Apps that use backing services, as {path: text} archives."""

from __future__ import annotations

FLASK_REDIS = {
    "requirements.txt": "flask\ngunicorn\nredis\n",
    "app.py": '''import os

import redis
from flask import Flask

app = Flask(__name__)
r = redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=3, socket_timeout=3)


@app.get("/")
def hits():
    return {"hits": r.incr("hits")}


@app.get("/probe")
def probe():
    """Use this app's own credentials against another Redis (port given by OTHER_REDIS_PORT)."""
    url = redis.connection.parse_url(os.environ["REDIS_URL"])
    other = redis.Redis(
        host=url["host"], port=int(os.environ["OTHER_REDIS_PORT"]),
        username=url.get("username"), password=url.get("password"), socket_connect_timeout=3,
    )
    try:
        return {"other": str(other.get("hits"))}
    except redis.RedisError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
''',
}

# Railway's Django template style: the settings read PGDATABASE, PGUSER, PGPASSWORD, PGHOST, PGPORT.
RAILWAY_PG = {
    "requirements.txt": "flask\ngunicorn\npsycopg[binary]\n",
    "settings.py": """import os

DATABASE = {
    "NAME": os.environ["PGDATABASE"],
    "USER": os.environ["PGUSER"],
    "PASSWORD": os.environ["PGPASSWORD"],
    "HOST": os.environ["PGHOST"],
    "PORT": os.environ["PGPORT"],
}
""",
    "app.py": '''import os

import psycopg
from flask import Flask

import settings

app = Flask(__name__)


def connect(dbname):
    d = settings.DATABASE
    return psycopg.connect(
        host=d["HOST"], port=d["PORT"], user=d["USER"], password=d["PASSWORD"], dbname=dbname,
        connect_timeout=3,
    )


@app.get("/")
def who():
    with connect(settings.DATABASE["NAME"]) as conn:
        db, user = conn.execute("SELECT current_database(), session_user").fetchone()
    return {"database": db, "user": user, "password": settings.DATABASE["PASSWORD"]}


@app.get("/probe")
def probe():
    """This app's own credentials against another database (OTHER_DATABASE)."""
    try:
        with connect(os.environ["OTHER_DATABASE"]) as conn:
            return {"other": conn.execute("SELECT current_database()").fetchone()[0]}
    except psycopg.Error as exc:
        return {"error": str(exc).strip()}
''',
}

DJANGO_SETTINGS = """import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.contenttypes", "notes"]
MIDDLEWARE = []
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
USE_TZ = True

url = urlsplit(os.environ["DATABASE_URL"])  # required: no database, no app
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(url.path.lstrip("/")),
        "USER": unquote(url.username),
        "PASSWORD": unquote(url.password),
        "HOST": url.hostname,
        "PORT": url.port,
        "OPTIONS": {"connect_timeout": 3},
    }
}
"""

DJANGO_PG = {
    "requirements.txt": "django>=4.2,<6\npsycopg[binary]\ngunicorn\n",
    "manage.py": """#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
""",
    "mysite/__init__.py": "",
    "mysite/settings.py": DJANGO_SETTINGS,
    "mysite/urls.py": """from django.urls import path

from notes import views

urlpatterns = [path("", views.count), path("add", views.add)]
""",
    "mysite/wsgi.py": """import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()
""",
    "notes/__init__.py": "",
    "notes/models.py": """from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=100)
""",
    "notes/migrations/__init__.py": "",
    "notes/migrations/0001_initial.py": """from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Note",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("text", models.CharField(max_length=100)),
            ],
        ),
    ]
""",
    "notes/views.py": """from django.http import JsonResponse

from notes.models import Note


def count(request):
    return JsonResponse({"notes": Note.objects.count()})


def add(request):
    Note.objects.create(text="hello")
    return JsonResponse({"notes": Note.objects.count()})
""",
}
# The release phase migrates once per deployment, before the boot check.
DJANGO_PG["Procfile"] = (
    "release: python manage.py migrate --noinput\n"
    "web: gunicorn --bind 0.0.0.0:$PORT mysite.wsgi:application\n"
)
