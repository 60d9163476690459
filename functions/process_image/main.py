"""Cloud Function `process_image` (HTTP, the Cloud Tasks target): one slice or one image.

2xx tells Cloud Tasks the task is finished, including when the image failed for good (that
outcome is recorded); 503 asks it to retry with the queue's backoff.
"""

import functions_framework
from flask import Request, Response

from shared.bootstrap import instance_services
from shared.entrypoints import flask_http


@functions_framework.http
def process_image(request: Request) -> Response:
    return flask_http.task(instance_services(), request)
