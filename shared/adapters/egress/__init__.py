"""Everything that talks to hosts strangers named: image URLs and webhook URLs.

- `address_guard.AddressGuard` (`shared.ports.UrlGuard`): which addresses may be contacted;
- `safe_http`: the image fetcher (`ImageFetcher`) and the webhook sender (`WebhookTransport`),
  connecting only to addresses the guard checked;
- `process_limits.ProcessFetchLimiter` (`FetchLimiter`): fetch slots within one process, where
  nothing is shared (a Cloud Function instance).
"""
