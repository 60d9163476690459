"""Cloud Function `status` (HTTP): GET /status/{request_id}, behind Firebase Hosting's rewrite."""

import functions_framework
from flask import Request, Response

from shared.bootstrap import instance_services
from shared.entrypoints import flask_http


@functions_framework.http
def status(request: Request) -> Response:
    # Hosting forwards the whole path (/status/<id>); called directly, the id may come alone.
    request_id = request.path.rstrip("/").rsplit("/", 1)[-1]
    return flask_http.status(instance_services(), request, request_id)
