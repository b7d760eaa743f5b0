"""Pages of the console: catalogue, model form, live prediction, history, output files.

Pages that only read the database and render are plain sync views: under ASGI each runs on
its request's own thread and holds one connection for its span, as under WSGI. Views that
await something else (an upload, the executor, Replicate) are async, and reach the
database only through `db()` units, which hold a connection only while they run (see
predictions/database.py). In those:

- `user = await request.auser()` and pass `user` into the template context: the auth
  context processor's lazy user would hit the database from the event loop otherwise.
- Everything a template shows is fetched before rendering (select_related, lists):
  a lazy relation touched in a template raises SynchronousOnlyOperation.
"""

import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    QueryDict,
)
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import events, executors, runner, upstream
from .database import db
from .forms import PAGE_SIZES, HistoryFilterForm, PredictionForm, chosen_file_names
from .models import CatalogModel, Prediction, User, decode_cursor, encode_cursor
from .presenters import (
    archived_file,
    decorate_rows,
    file_entry,
    input_rows,
    page_context,
    snippet_input,
    summary_of,
)
from .responses import console_url, see_other, wants_json
from .schema import api_snippet


def visible_prediction(user: User, pk: uuid.UUID) -> Prediction:
    prediction = (
        Prediction.objects.visible_to(user).select_related("model", "owner").filter(pk=pk).first()
    )
    if prediction is None:
        raise Http404("No such prediction.")
    return prediction


# ---------------------------------------------------------------------------- catalogue


@require_GET
def catalogue(request: HttpRequest) -> HttpResponse:
    user = request.user
    # The user's latest run of each model in the same query, then those runs in one more.
    latest = Prediction.objects.filter(owner_id=user.pk, model_id=OuterRef("pk")).order_by(
        "-created_at"
    )
    models = [
        m
        for m in CatalogModel.objects.runnable_by(user)
        .annotate(last_run_id=Subquery(latest.values("id")[:1]))
        .order_by("title", "owner", "name")
    ]
    run_ids = [m.last_run_id for m in models if m.last_run_id]
    runs = {
        p.pk: p
        for p in Prediction.objects.filter(pk__in=run_ids).only(
            "id", "status", "created_at", "completed_at", "cancel_requested_at"
        )
    }
    for m in models:
        m.last_run = runs.get(m.last_run_id)
    context = {"models": models, "user": user, "nav": "models"}
    return render(request, "predictions/catalogue.html", context)


# ---------------------------------------------------------------------------- model form


def runnable_model(user: User, **lookup: Any) -> CatalogModel:
    model = CatalogModel.objects.runnable_by(user).filter(**lookup).first()
    if model is None:
        raise Http404("No such model, or you may not run it.")
    return model


async def render_form(
    request: HttpRequest,
    user: User,
    form: PredictionForm,
    *,
    parent: Prediction | None = None,
    run_version: str,
    status: int = 200,
) -> HttpResponse:
    model = form.model
    fields = form.shown_fields()
    general = form.general_errors()
    recent = await db(recent_runs)(user, model)
    context = {
        "user": user,
        "nav": "models",
        "model": model,
        "fields": fields,
        "general_errors": general,
        "error_count": sum(1 for spec in fields if spec.errors) + len(general),
        "parent": parent,
        "run_version": run_version,
        # A re-run offers the version it came from and the model's current one.
        "current_version": model.run_version,
        "version_differs": parent is not None and run_version != model.run_version,
        "recent": recent,
        "snippet": api_snippet(model, snippet_input(fields), console_url(request)),
    }
    return render(request, "predictions/model.html", context, status=status)


def recent_runs(user: User, model: CatalogModel) -> list[Prediction]:
    recent = list(
        Prediction.objects.filter(owner_id=user.pk, model_id=model.pk).only(
            "id",
            "status",
            "created_at",
            "completed_at",
            "input",
            "hidden_inputs",
            "cancel_requested_at",
        )[:5]
    )
    for p in recent:
        p.summary = summary_of(p)
    return recent


def parent_for(user: User, raw: str | None) -> tuple[Prediction | None, str]:
    """The prediction a re-run came from, if the user may see it; else an error message."""
    if not raw:
        return None, ""
    try:
        pk = uuid.UUID(raw)
    except ValueError:
        return None, "The prediction this re-runs is not a valid id."
    parent = Prediction.objects.visible_to(user).filter(pk=pk).first()
    if parent is None:
        return None, "The prediction this re-runs does not exist or is not visible to you."
    return parent, ""


def posted_version(
    user: User, model: CatalogModel, post: QueryDict
) -> tuple[Prediction | None, str, list[str]]:
    """The run a posted form re-runs (if any), the version it runs, and what is wrong with
    either: a re-run may keep its parent's version, any other run takes the current one."""
    parent, parent_error = parent_for(user, post.get("parent"))
    run_version = post.get("run_version", model.run_version)
    allowed = {model.run_version} | ({parent.version} if parent and parent.version else set())
    version_error = ""
    if run_version not in allowed:
        version_error = "Choose the version of the run you re-run, or the current one."
        run_version = model.run_version
    return parent, run_version, [m for m in (version_error, parent_error) if m]


@require_http_methods(["GET", "POST"])
async def model_page(request: HttpRequest, owner: str, name: str) -> HttpResponse:
    user = await request.auser()
    assert user.is_authenticated  # LoginRequiredMiddleware let the request in
    model = await db(runnable_model)(user, owner=owner, name=name)
    if request.method != "POST":
        input_schema = (await db(model.schema_for)(model.run_version))[0]
        form = PredictionForm(model, input_schema)
        return await render_form(request, user, form, run_version=model.run_version)

    parent, run_version, problems = await db(posted_version)(user, model, request.POST)
    input_schema = (await db(model.schema_for)(run_version))[0]
    form = PredictionForm(model, input_schema, request.POST, request.FILES)
    form.is_valid()
    for message in problems:
        form.add_error(None, message)
    refused = await form.acheck_throttle(user)
    if form.errors:
        form.forget_pending()
        status = 400 if refused is None else 429
        response = await render_form(
            request, user, form, parent=parent, run_version=run_version, status=status
        )
        if refused is not None:
            response["Retry-After"] = str(refused.retry_after)
        return response
    try:
        await form.aupload_pending()
    except upstream.UpstreamError as exc:
        form.add_error(None, f"Could not upload your file: {exc}")
        return await render_form(
            request, user, form, parent=parent, run_version=run_version, status=502
        )

    prediction = await executors.start_prediction(
        owner=user,
        model=model,
        input=form.cleaned_input,
        source=Prediction.Source.WEB,
        parent=parent,
        version=run_version,
    )
    return see_other(reverse("predictions:detail", args=[prediction.pk]))


@require_POST
def model_snippet(request: HttpRequest, owner: str, name: str) -> HttpResponse:
    """The model page's API snippet for the form's values as they stand: the `snippet`
    partial alone. It takes the run form's fields with each picked file's name instead of
    the file (forms.FILE_NAMES), shows only the values that are valid, and runs nothing."""
    user = request.user
    model = runnable_model(user, owner=owner, name=name)
    _, run_version, _ = posted_version(user, model, request.POST)
    form = PredictionForm(model, model.schema_for(run_version)[0], request.POST)
    values = snippet_input(form.shown_fields(), chosen_file_names(request.POST))
    context = {"snippet": api_snippet(model, values, console_url(request))}
    return render(request, "predictions/model.html#snippet", context)


@require_GET
async def prediction_rerun(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    user = await request.auser()
    parent = await db(visible_prediction)(user, pk)
    if parent.model_id is None:
        raise Http404("The model of this prediction is no longer in the catalogue.")
    model = await db(runnable_model)(user, pk=parent.model_id)
    # The parent's own version by default (its schema is kept); the form offers the current.
    version = parent.version if parent.version else model.run_version
    if request.GET.get("version") == "current":
        version = model.run_version
    input_schema = (await db(model.schema_for)(version))[0]
    form = PredictionForm(model, input_schema, initial=parent.input)
    return await render_form(request, user, form, parent=parent, run_version=version)


# ---------------------------------------------------------------------------- live page


def detail_context(request: HttpRequest, user: User, prediction: Prediction) -> dict[str, Any]:
    files = [file_entry(prediction.pk, f) for f in prediction.files.order_by("position")]
    progress = events.parse_progress(prediction.logs)
    # The run this re-ran, only if the user may see it.
    parent = None
    if prediction.parent_id:
        parent = (
            Prediction.objects.visible_to(user)
            .filter(pk=prediction.parent_id)
            .only("id", "status", "cancel_requested_at")
            .first()
        )
    children = [
        c
        for c in Prediction.objects.visible_to(user)
        .filter(parent_id=prediction.pk)
        .only("id", "status", "created_at", "cancel_requested_at")
        .order_by("created_at")[:20]
    ]
    model = prediction.model
    return {
        **page_context(prediction, files, progress),
        "user": user,
        "nav": "history",
        "model": model,
        "parent": parent,
        "children": children,
        "inputs": input_rows(prediction.input_for(user)),
        "can_cancel": prediction.is_active and (user.is_staff or prediction.owner_id == user.pk),
        "snippet": (
            api_snippet(model, prediction.input_for(user), console_url(request)) if model else ""
        ),
        # What the page's sockets need: the live events from `seq` on, and "Run again".
        "config": {
            "socket": f"/ws/predictions/{prediction.pk}/",
            "seq": prediction.event_seq,
            "finished": not prediction.is_active,
            "feed": "/ws/predictions/",
            "submit": {
                "type": "submit",
                "model": prediction.model_ref,
                "input": prediction.public_input,
                "parent": str(prediction.pk),
            },
            "rerun": reverse("predictions:rerun", args=[prediction.pk]),
        },
    }


@require_GET
def prediction_detail(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    user = request.user
    prediction = visible_prediction(user, pk)
    return render(request, "predictions/detail.html", detail_context(request, user, prediction))


@require_POST
async def prediction_cancel(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    user = await request.auser()
    prediction = await db(visible_prediction)(user, pk)
    if not (user.is_staff or prediction.owner_id == user.pk):
        raise PermissionDenied("Only its owner or staff can cancel a prediction.")
    if prediction.is_active:
        await runner.cancel(prediction)
    if wants_json(request):
        return JsonResponse({"status": prediction.status, "canceling": prediction.is_active})
    return see_other(reverse("predictions:detail", args=[prediction.pk]))


# ---------------------------------------------------------------------------- files


@require_GET
def output_file(request: HttpRequest, pk: uuid.UUID, position: int) -> FileResponse:
    """Our archived copy of an output file, to those who may see the prediction."""
    return archived_file(request.user, pk, position, download="download" in request.GET)


# ---------------------------------------------------------------------------- history


@require_GET
def history(request: HttpRequest) -> HttpResponse:
    user = request.user
    form = HistoryFilterForm(request.GET, user)
    # Members see only the models they may run: the others' names are not theirs to know.
    listed = CatalogModel.objects.all() if user.is_staff else CatalogModel.objects.runnable_by(user)
    models = list(listed.only("id", "owner", "name", "title"))
    qs = form.history(Prediction.objects.visible_to(user), models)

    # One row, for the live page: the feed says a prediction changed, the row is re-drawn.
    row_id = request.GET.get("row")
    if row_id:
        try:
            pk = uuid.UUID(row_id)
        except ValueError:
            raise Http404("Not a prediction id.") from None
        row = qs.filter(pk=pk).first()
        if row is None:
            return HttpResponse(status=204)  # gone, or not matching the filters
        return render(
            request, "predictions/history.html#row", {"user": user, "p": decorate_rows([row])[0]}
        )

    filters = form.filters
    before, after = request.GET.get("before"), request.GET.get("after")
    rows, has_newer, has_older = qs.page(filters.per_page, before=before, after=after)
    rows = decorate_rows(rows)

    params = request.GET.copy()
    for key in ("before", "after", "row"):
        params.pop(key, None)
    newer_params = params.copy()
    older_params = params.copy()
    if rows:
        newer_params["after"] = encode_cursor(rows[0])
        older_params["before"] = encode_cursor(rows[-1])
    owners = []
    if user.is_staff:
        owners = list(get_user_model().objects.order_by("username").only("id", "username"))
    context: dict[str, Any] = {
        "user": user,
        "nav": "history",
        "rows": rows,
        "filters": filters,
        "models": sorted(models, key=lambda m: m.ref),
        "owners": owners,
        "statuses": Prediction.Status.choices,
        "page_sizes": PAGE_SIZES,
        "has_newer": has_newer,
        "has_older": has_older,
        "newer_url": "?" + newer_params.urlencode() if has_newer else "",
        "older_url": "?" + older_params.urlencode() if has_older else "",
        "first_url": "?" + params.urlencode() if has_newer else "",
        "live_config": {
            "feed": "/ws/predictions/",
            # New rows are only added at the top of the first page; the server applies
            # the filters to each one.
            "insert": not (decode_cursor(before) or decode_cursor(after)),
            "row_url": "?" + (params.urlencode() + "&" if params else "") + "row=",
        },
    }
    return render(request, "predictions/history.html", context)
