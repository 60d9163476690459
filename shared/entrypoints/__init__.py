"""Where work comes in. Every entry point decodes its input, calls one handler, encodes the answer.

- `http_api`: the client API's answers (upload, status), framework-free;
- `flask_http`: Flask requests in, Flask responses out, around `http_api` and `tasks` (used by
  the local gateway and by the HTTP Cloud Functions, whose functions-framework is Flask);
- `tasks`: the one handler of queued messages (Cloud Tasks' target, the Celery task);
- `cloud_events`: the CloudEvents `finalize` receives (the Firestore trigger, queued messages).

The thin shells around them are `functions/*/main.py`, `local_profile/worker.py` and
`local_profile/gateway.py`.
"""
