"""The local profile's infrastructure: Celery on Redis, and limits shared through Redis.

- `celery_queue`: the `TaskQueue` (and `ImageEvents`) over Celery, delays in a Redis sorted set;
- `redis_limits`: fetch slots and the upload rate, shared by every worker process and the gateway.
"""
