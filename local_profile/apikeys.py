"""Make an API key: `python -m local_profile.apikeys new <name>` (or `make apikey NAME=<name>`).

Prints the key once, for the client, and the `API_KEYS` entry for the service, which holds only
the key's SHA-256. Nothing is written anywhere: the key cannot be shown again, only replaced.
"""

from __future__ import annotations

import argparse
import sys

from shared.config import ConfigError, parse_api_keys
from shared.domain.access import new_api_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="make a key for a client")
    new.add_argument("name", help="the key id: who the client is (letters, digits, _ . -)")
    args = parser.parse_args(argv)

    made = new_api_key(args.name)
    try:
        parse_api_keys(made.entry)
    except ConfigError:
        print(
            f"{args.name!r} cannot be a key id: use up to 64 letters, digits, '_', '.' or '-'",
            file=sys.stderr,
        )
        return 2
    print(f"API key for {args.name} (shown once; give it to the client):")
    print(f"  {made.key}")
    print("Add this entry to API_KEYS (comma-separated; locally in the environment or .env,")
    print("in the cloud in the Secret Manager secret that deploy.sh maps to API_KEYS):")
    print(f"  {made.entry}")
    print("The client sends: Authorization: Bearer <key>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
