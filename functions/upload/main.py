"""Cloud Function `upload` (HTTP): validate the CSV, store it, record the request, fan out, 202.
Also POST /requests/{request_id}/webhook/resend, the API's other write (Hosting's rewrites)."""

import functions_framework
from flask import Request, Response

from shared.bootstrap import instance_services
from shared.entrypoints import flask_http


@functions_framework.http
def upload(request: Request) -> Response:
    return flask_http.upload_function(instance_services(), request)
