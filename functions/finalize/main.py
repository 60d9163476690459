"""Cloud Function `finalize` (CloudEvent).

Two kinds of event arrive here:
- `google.cloud.firestore.document.v1.written` from the Firestore trigger on
  requests/{requestId}/images/{imageId}: when an image has just settled, finalise the request
  if it was the last one (exactly once, however many and in whatever order events arrive);
- `com.imgsvc.webhook.deliver` from the webhooks Cloud Tasks queue: one delivery attempt.
"""

import functions_framework
from cloudevents.http import CloudEvent

from shared.bootstrap import instance_services
from shared.entrypoints.cloud_events import handle_event


@functions_framework.cloud_event
def finalize(event: CloudEvent) -> None:
    handle_event(instance_services(), event["type"], event.get_data())
