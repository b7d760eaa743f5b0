"""The gateway: the console speaks Replicate's HTTP API (/api/v1/), so the official clients
work unchanged against it with a personal key (models.ApiKey). Every create goes through
the same form and engine as the web UI."""
