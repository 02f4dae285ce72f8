"""azure-identity (Python) as a consumer of keyfed, for tests/azure_faces.rs (issue 10) and
tests/exec_env.rs (issue 12).

Usage:
  azure_identity.py managed [--client-id ID] SCOPE...   ManagedIdentityCredential.get_token,
                                                        one call per scope, as the environment
                                                        points it (IDENTITY_ENDPOINT and
                                                        IDENTITY_HEADER: App Service;
                                                        AZURE_POD_IDENTITY_AUTHORITY_HOST: IMDS)
  azure_identity.py workload SCOPE                      WorkloadIdentityCredential.get_token on
                                                        AZURE_FEDERATED_TOKEN_FILE
  azure_identity.py default SCOPE                       DefaultAzureCredential.get_token: the first
                                                        credential of its chain the environment
                                                        configures (issue 12: keyfed exec)

Prints one JSON object per line: {"scope", "token", "expires_on"} or, where the library raised,
{"scope", "error"} with the exception's text. A token printed here is one the test's own Entra
emulator issued.
"""

import json
import sys

try:
    from azure.identity import (
        DefaultAzureCredential,
        ManagedIdentityCredential,
        WorkloadIdentityCredential,
    )
except ImportError as e:  # pragma: no cover - the test names the remedy
    print(f"azure-identity is missing from this venv ({e}): run tests/run", file=sys.stderr)
    sys.exit(3)


def emit(**fields):
    print(json.dumps(fields), flush=True)


def get(credential, scopes):
    for scope in scopes:
        try:
            token = credential.get_token(scope)
            emit(scope=scope, token=token.token, expires_on=token.expires_on)
        except Exception as e:  # the test prints what the library said
            emit(scope=scope, error=f"{type(e).__name__}: {e}")


def main(argv):
    if len(argv) >= 2 and argv[0] == "managed":
        args = argv[1:]
        client_id = None
        if args[:1] == ["--client-id"]:
            client_id, args = args[1], args[2:]
        get(ManagedIdentityCredential(client_id=client_id), args)
    elif len(argv) == 2 and argv[0] == "workload":
        # The authority is the test's Entra emulator, which MSAL would otherwise confirm with
        # login.microsoftonline.com's instance discovery.
        get(WorkloadIdentityCredential(disable_instance_discovery=True), argv[1:])
    elif len(argv) == 2 and argv[0] == "default":
        get(DefaultAzureCredential(), argv[1:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
