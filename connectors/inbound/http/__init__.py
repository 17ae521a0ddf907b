"""The hub's HTTP door (FastAPI): one small router per feature, put together by `app.create_app`.

Modules: app (the factory, the parts it is given, the access log), common (ports asked for with
Depends, request bodies, stored bytes), auth (bearer token -> Credential -> Actor), errors (the error
body, TransientError -> 503, the edge's refusal tracing), params (numeric bounds, their 422), read_gate
(the record's read table before a profile's part is read), and one router per feature: documents,
operations, record, lifecycle, insurer, mailbox, notifications.
Nothing is imported here, so that importing one router does not build the others.
"""
