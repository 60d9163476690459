"""`imgsvc`: the service from a terminal. Upload a CSV, follow its progress, fetch the results.

It talks HTTP to any deployment (`--url` / `IMGSVC_URL`, the local gateway by default) and
never reaches into the service's storage: everything comes through the public API and the
output URLs it hands out.
"""
