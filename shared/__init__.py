"""Core of the image-processing service: domain, use cases, adapters. No Celery, no Flask."""
