"""Pages of the console. (Placeholders until the UI issue lands.)"""

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from .models import CatalogModel


async def catalogue(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    models = [m async for m in CatalogModel.objects.runnable_by(user)]
    return render(request, "predictions/catalogue.html", {"models": models, "user": user})


def model_page(request: HttpRequest, owner: str, name: str) -> HttpResponse:
    raise Http404


def history(request: HttpRequest) -> HttpResponse:
    raise Http404


def prediction_detail(request: HttpRequest, pk: str) -> HttpResponse:
    raise Http404


def prediction_cancel(request: HttpRequest, pk: str) -> HttpResponse:
    raise Http404


def prediction_rerun(request: HttpRequest, pk: str) -> HttpResponse:
    raise Http404


def output_file(request: HttpRequest, pk: str, position: int) -> HttpResponse:
    raise Http404
