"""The gateway's server-sent events: a prediction's `urls.stream`, as Replicate serves it
(the capability URL itself is api_shapes.stream_url)."""
