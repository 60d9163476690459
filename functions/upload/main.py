"""Cloud Function `upload` (HTTP): validate the CSV, store it, record the request, fan out, 202."""

import functions_framework
from flask import Request, Response

from shared import http_flask
from shared.bootstrap import instance_services


@functions_framework.http
def upload(request: Request) -> Response:
    return http_flask.upload(instance_services(), request)
