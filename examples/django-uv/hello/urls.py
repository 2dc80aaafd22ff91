from django.http import HttpRequest, JsonResponse
from django.urls import path


def index(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"message": "Hello from Phemeral (Django)"})


urlpatterns = [path("", index)]
