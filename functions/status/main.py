"""Cloud Function `status` (HTTP): GET /status/{request_id} and
POST /requests/{request_id}/webhook/resend, behind Firebase Hosting's rewrites."""

import functions_framework
from flask import Request, Response

from shared.bootstrap import instance_services
from shared.entrypoints import flask_http


@functions_framework.http
def status(request: Request) -> Response:
    return flask_http.status_function(instance_services(), request)
