"""The local profile's entry points (Celery tasks, HTTP gateway) and the tools that run them."""
