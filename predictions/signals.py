"""Signal receivers: an account that ends (logout, deactivation) takes its sockets along.

A websocket authenticates once, at its handshake; without these it would outlive the
session it opened with. (Consumers also re-check the session before each submit, which
covers sessions that end without a signal: expiry, clearsessions, a password change.)
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.http import HttpRequest

from . import events


@receiver(user_logged_out)
def close_logged_out_sockets(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    # Sent before the session is flushed: its key still names the sockets to close.
    if user is not None and request is not None and request.session.session_key:
        events.close_sockets(user.pk, request.session.session_key)


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def close_deactivated_users_sockets(sender: Any, instance: Any, **kwargs: Any) -> None:
    if not instance.is_active:
        transaction.on_commit(lambda: events.close_sockets(instance.pk))
