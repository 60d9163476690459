"""Google Cloud: Firestore (the source of truth), Cloud Storage, Cloud Tasks, trigger events.

- `firestore_store`: requests, images and webhook deliveries (the repositories in `ports`);
- `firestore_events`: the Firestore trigger's events decoded, and `FirestoreTriggerEvents`;
- `firestore_rate_limit`: the per-key upload rate where nothing else is shared;
- `gcs_blobs`: uploaded CSVs and outputs (`BlobStore`);
- `cloud_tasks_queue`: production's `TaskQueue`.
"""
