"""Fixtures for engine tests that run the runner in the test process against the sandbox.

A plugin, declared in tests/conftest.py (it needs ``tests.sandbox_server``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from django.db import connections

from predictions import executors, upstream
from predictions.models import ApiToken, CatalogModel
from tests.engine_helpers import MakeModel


@pytest.fixture(scope="session", autouse=True)
def _close_engine_connections(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Runners and consumers use the database from pool threads, and pooled connections
    outlive them; close what can be closed and end the rest, so the test database can be
    dropped."""
    yield
    with django_db_blocker.unblock():
        SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)
        for connection in connections.all(initialized_only=True):
            if hasattr(connection, "close_pool"):
                connection.close_pool()
        connection = connections["default"]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            connection.close()
            connection.close_pool()


@pytest.fixture
def sandbox_model(transactional_db: None, sandbox_url: str, sandbox_token: str) -> MakeModel:
    """`sandbox_model("text", faults="cut_after=5", deadline_seconds=2)`: a catalogue entry
    for a sandbox demo model ("sandbox/<name>", or a full ref), with its own token (faults
    ride on it, scoped to the test).

    `alias=True` makes a separate entry ("sandbox/text-1a2b…") so one test can have several
    with different faults; predictions for it must set model_ref="sandbox/<name>" themselves.
    """
    from sandbox.demo_models import MODELS

    def make(
        name: str, faults: str, pinned: bool, alias: bool, fields: dict[str, Any]
    ) -> CatalogModel:
        demo = MODELS[name if "/" in name else f"sandbox/{name}"]
        # A fresh scope gives this test its own fault counters on the shared sandbox.
        spec = ",".join(filter(None, [faults, f"scope={uuid.uuid4().hex[:12]}"]))
        token = ApiToken(label=f"sandbox {uuid.uuid4().hex[:8]}", base_url=sandbox_url)
        token.set_token(f"{sandbox_token}:{spec}")
        token.save()
        input_schema, output_schema = upstream.split_openapi_schema(
            demo.latest_version.openapi_schema
        )
        model, _ = CatalogModel.objects.update_or_create(
            owner=demo.owner,
            name=f"{demo.name}-{uuid.uuid4().hex[:8]}" if alias else demo.name,
            defaults={
                "input_schema": input_schema,
                "output_schema": output_schema,
                "version": demo.latest_version.id if pinned else "",
                "schema_version": demo.latest_version.id,
                "is_official": demo.is_official,
                "token": token,
                **fields,
            },
        )
        return model

    async def amake(
        name: str = "text",
        faults: str = "",
        pinned: bool = False,
        alias: bool = False,
        **fields: Any,
    ) -> CatalogModel:
        return await sync_to_async(make)(name, faults, pinned, alias, fields)

    return amake


@pytest.fixture
async def inline_runs() -> AsyncIterator[executors.InlineExecutor]:
    """The inline executor as tests use it (runners on the test's loop); afterwards any
    runner still going is stopped, so none outlives its test's database."""
    yield executors.inline
    tasks = list(executors.inline.tasks.values())
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=10)
