from django.apps import AppConfig


class PredictionsConfig(AppConfig):
    name = "predictions"
    verbose_name = "Predictions"

    def ready(self) -> None:
        # Local on purpose: apps.py is imported while the app registry is still loading,
        # and ready() is where Django has an app connect its receivers.
        from . import signals  # noqa: F401 - connects the receivers
