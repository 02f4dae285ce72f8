"""google-auth (Python) as a consumer of keyfed, for tests/gcp_interop.rs.

Usage:
  google_auth.py external-account FILE...   load_credentials_from_file + refresh, per file
  google_auth.py metadata AUDIENCE          compute_engine.Credentials, google.auth.default()
                                            and id_token.fetch_id_token via GCE_METADATA_HOST

Prints one JSON object per line: what the library got ("token", "expiry" in Unix seconds,
"id_token", ...) or, where it raised, "error" with the exception's text. The test reads these
lines; a token printed here is one the test's own emulator issued.
"""

import calendar
import json
import sys

try:
    import google.auth
    import google.auth.compute_engine
    import google.oauth2.id_token
    from google.auth.transport.requests import Request
except ImportError as e:  # pragma: no cover - the test names the remedy
    print(f"google-auth is missing from this venv ({e}): run tests/run", file=sys.stderr)
    sys.exit(3)


def unix(expiry):
    """google-auth keeps expiry as a naive UTC datetime."""
    return calendar.timegm(expiry.utctimetuple()) if expiry else None


def emit(**fields):
    print(json.dumps(fields), flush=True)


def external_account(files):
    for path in files:
        try:
            # Client libraries give their API's scopes (impersonation needs some). Given to
            # load_credentials_from_file, they would make it look the project up at
            # cloudresourcemanager.googleapis.com, out of this test's reach.
            creds, _ = google.auth.load_credentials_from_file(path)
            creds = creds.with_scopes(["https://www.googleapis.com/auth/cloud-platform"])
            creds.refresh(Request())
            emit(
                file=path,
                kind=type(creds).__module__ + "." + type(creds).__name__,
                token=creds.token,
                expiry=unix(creds.expiry),
                valid=creds.valid,
            )
        except Exception as e:  # the test asserts on the library's own words
            emit(file=path, error=f"{type(e).__name__}: {e}")


def metadata(audience):
    creds = google.auth.compute_engine.Credentials()
    creds.refresh(Request())
    emit(
        what="compute_engine.Credentials",
        token=creds.token,
        expiry=unix(creds.expiry),
        service_account_email=creds.service_account_email,
    )
    default, project = google.auth.default()
    emit(what="google.auth.default", kind=type(default).__name__, project=project)
    id_token = google.oauth2.id_token.fetch_id_token(Request(), audience)
    emit(what="id_token.fetch_id_token", id_token=id_token)


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "external-account":
        external_account(args)
    elif command == "metadata":
        metadata(*args)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
