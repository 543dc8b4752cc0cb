"""`python -m dbenv [url|ensure]`: print the database URL, creating the database if asked."""

import sys

import dbenv


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "url"
    if command in ("-h", "--help", "help"):
        print(__doc__)
        print("  url     print the database URL (DATABASE_URL, or the embedded Postgres, started if needed)")
        print("  ensure  also create the database if it does not exist, then print the URL")
        return 0
    if command not in ("url", "ensure"):
        print(f"error: unknown command {command!r}; use 'url' or 'ensure'", file=sys.stderr)
        return 2
    try:
        url = dbenv.ensure_database() if command == "ensure" else dbenv.database_url()
    except dbenv.DatabaseURLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
