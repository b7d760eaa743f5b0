"""A local stand-in for api.replicate.com that the official `replicate` client can talk to.

State lives in memory in the serving process (see `sandbox.store`); run it in a single
ASGI process (daphne) so every request, prediction task and stream share one event loop.
"""
