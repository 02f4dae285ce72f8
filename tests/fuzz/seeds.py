#!/usr/bin/env python3
"""Writes the seed corpora of keyfed's fuzz targets (issue 11) to tests/fuzz/corpus/<target>/.

Each seed is a real answer (or exchange of answers) in the format tests/fuzz/src/lib.rs
describes: an options line, then `=== <status> [content type]` and a body per answer. The
Keycloak seeds carry tokens signed by a key made here and thrown away (only its public half is
in the seeds' JWKS), issued for the fuzz server's fixed address and clock (lib.rs: ADDRESS,
NOW_SECS). Run it again after changing those; the test command never runs it.

Needs the `cryptography` package (python3-cryptography).
"""

import base64
import json
import pathlib

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

NOW = 1_767_225_600
BASE = "http://127.77.0.1:18080"
ISSUER = f"{BASE}/realms/fuzz"
CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64n(n: int) -> str:
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def jwt(header: dict, claims: dict, sign) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def rs256(data: bytes) -> bytes:
    return RSA_KEY.sign(data, padding.PKCS1v15(), hashes.SHA256())


def es256(data: bytes) -> bytes:
    r, s = decode_dss_signature(EC_KEY.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def rsa_jwk(kid: str) -> dict:
    numbers = RSA_KEY.public_key().public_numbers()
    return {"kid": kid, "kty": "RSA", "alg": "RS256", "use": "sig", "n": b64n(numbers.n), "e": b64n(numbers.e)}


def ec_jwk(kid: str) -> dict:
    numbers = EC_KEY.public_key().public_numbers()
    return {
        "kid": kid, "kty": "EC", "alg": "ES256", "use": "sig", "crv": "P-256",
        "x": b64(numbers.x.to_bytes(32, "big")), "y": b64(numbers.y.to_bytes(32, "big")),
    }


def claims(**extra) -> dict:
    base = {
        "exp": NOW + 300, "iat": NOW - 10, "jti": "0b6ad2a4-43f2-4c73-9d4b-1a2f3c4d5e6f",
        "iss": ISSUER, "aud": "sts.amazonaws.com", "sub": "6f1c6d0e-9a7b-4c1e-8e3f-2a1b0c9d8e7f",
        "typ": "Bearer", "azp": "host-fuzz", "scope": "aws-audience profile email",
        "clientHost": "10.0.0.1", "preferred_username": "service-account-host-fuzz",
    }
    base.update(extra)
    return base


DISCOVERY = json.dumps({
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/protocol/openid-connect/auth",
    "token_endpoint": f"{ISSUER}/protocol/openid-connect/token",
    "jwks_uri": f"{ISSUER}/protocol/openid-connect/certs",
    "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
    "token_endpoint_auth_methods_supported": [
        "private_key_jwt", "client_secret_basic", "client_secret_post", "tls_client_auth", "client_secret_jwt",
    ],
    "id_token_signing_alg_values_supported": ["PS384", "RS384", "EdDSA", "ES384", "HS256", "HS512", "ES256", "RS256"],
}, indent=1)


def token_response(token: str) -> str:
    return json.dumps({
        "access_token": token, "expires_in": 300, "refresh_expires_in": 0, "token_type": "Bearer",
        "not-before-policy": 0, "scope": "aws-audience profile email",
    })


def seed(target: str, name: str, options: str, *answers) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    text = options + "\n"
    for status, body in answers:
        text += f"=== {status}\n{body}\n"
    (folder / name).write_text(text)


RS_TOKEN = jwt({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}, claims(), rs256)
ES_TOKEN = jwt({"alg": "ES256", "typ": "JWT", "kid": "ec-1"}, claims(), es256)
JWKS = json.dumps({"keys": [rsa_jwk("rsa-1"), ec_jwk("ec-1"), {"kid": "enc", "kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}]})


def keycloak() -> None:
    t = "keycloak_responses"
    seed(t, "verified-rs256", "verify", (200, DISCOVERY), (200, token_response(RS_TOKEN)), (200, JWKS))
    seed(t, "verified-es256-strict", "verify strict", (200, DISCOVERY), (200, token_response(ES_TOKEN)), (200, JWKS))
    rotated = jwt({"alg": "RS256", "kid": "rsa-2"}, claims(), rs256)
    seed(t, "rotated-key-refetched", "verify", (200, DISCOVERY), (200, token_response(rotated)),
         (200, JWKS), (200, json.dumps({"keys": [rsa_jwk("rsa-2")]})))
    seed(t, "unverified-endpoint", "endpoint", (200, token_response(RS_TOKEN)))
    two = jwt({"alg": "RS256", "kid": "rsa-1"}, claims(aud=["sts.amazonaws.com", "account"]), rs256)
    seed(t, "two-audiences-strict", "strict post", (200, DISCOVERY), (200, token_response(two)))
    expired = jwt({"alg": "RS256", "kid": "rsa-1"}, claims(exp=NOW - 5, iat=NOW - 305), rs256)
    seed(t, "expired", "jwt", (200, DISCOVERY), (200, token_response(expired)))
    no_aud = jwt({"alg": "RS256", "kid": "rsa-1"}, {k: v for k, v in claims().items() if k != "aud"}, rs256)
    seed(t, "no-audience", "", (200, DISCOVERY), (200, token_response(no_aud)))
    seed(t, "invalid-scope", "post", (200, DISCOVERY), (400, json.dumps({
        "error": "invalid_scope", "error_description": "Invalid scopes: aws-audience"})))
    seed(t, "invalid-client", "jwt", (200, DISCOVERY), (401, json.dumps({
        "error": "invalid_client", "error_description": "Invalid client or Invalid client credentials"})))
    seed(t, "unauthorized-client", "", (200, DISCOVERY), (400, json.dumps({
        "error": "unauthorized_client",
        "error_description": "Client not enabled to retrieve service account"})))
    seed(t, "proxy-echoes-request", "post endpoint", (400, "<html><body><h1>400 Bad Request</h1><pre>{request}</pre></body></html>"))
    seed(t, "waf-echoes-form", "post endpoint", (403, "Request blocked by policy. Request data: {body}"))
    # issue 11: the form echoed in a 200 (an echo service) showed the client secret.
    seed(t, "token-response-echoes-form", "post endpoint", (200, '{"echo": "{body}"'))
    seed(t, "gateway-down", "", (502, "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"))
    other = DISCOVERY.replace(ISSUER + '"', 'https://sso.example.com/realms/fuzz"', 1)
    seed(t, "discovery-other-issuer", "", (200, other))
    seed(t, "discovery-downgrade", "", (200, DISCOVERY.replace(f'"token_endpoint": "{ISSUER}', '"token_endpoint": "http://sso.example.com/realms/fuzz')))
    no_jwks = json.loads(DISCOVERY)
    del no_jwks["jwks_uri"]
    seed(t, "discovery-without-jwks", "verify", (200, json.dumps(no_jwks)), (200, token_response(RS_TOKEN)))
    hs = jwt({"alg": "HS256", "kid": "rsa-1"}, claims(), lambda d: b"not-an-hmac")
    seed(t, "hs256-refused", "verify", (200, DISCOVERY), (200, token_response(hs)), (200, JWKS))
    seed(t, "truncated-token", "endpoint", (200, token_response(RS_TOKEN)[:60]))


STS_OK = """<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>host-fuzz</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/keyfed-fuzz/keyfed-fuzz</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:keyfed-fuzz</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>IQoJb3JpZ2luX2VjEFUZZSESSIONTOKENexampleexampleexampleexample</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYFUZZSECRETKEY</SecretAccessKey>
      <Expiration>2026-01-01T01:00:00Z</Expiration>
      <AccessKeyId>ASIAFUZZEXAMPLE12345</AccessKeyId>
    </Credentials>
    <SourceIdentity>host-fuzz</SourceIdentity>
    <Provider>sso.example.com/realms/infra</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"""


def sts_error(kind: str, code: str, message: str) -> str:
    return f"""<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>{kind}</Type>
    <Code>{code}</Code>
    <Message>{message}</Message>
  </Error>
  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
</ErrorResponse>"""


def sts() -> None:
    t = "sts_responses"
    seed(t, "credentials", "", (200, STS_OK))
    seed(t, "credentials-fractional-expiry", "", (200, STS_OK.replace("01:00:00Z", "01:00:00.123Z")))
    seed(t, "no-credentials", "", (200, STS_OK[:STS_OK.index("<Credentials>")] + "</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"))
    seed(t, "invalid-identity-token", "", (400, sts_error("Sender", "InvalidIdentityToken", "No OpenIDConnect provider found in your account for https://sso.example.com/realms/infra")))
    seed(t, "access-denied", "", (403, sts_error("Sender", "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")))
    seed(t, "expired-token", "", (400, sts_error("Sender", "ExpiredTokenException", "Token expired: current date/time 1767225600 must be before the expiration date/time 1767225500")))
    seed(t, "idp-communication", "", (400, sts_error("Sender", "IDPCommunicationError", "Couldn't retrieve verification key from your identity provider")))
    seed(t, "throttling", "", (400, sts_error("Sender", "Throttling", "Rate exceeded")))
    seed(t, "duration-too-long", "", (400, sts_error("Sender", "ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")))
    seed(t, "service-unavailable", "", (503, "<html><body>Service Unavailable</body></html>"))
    seed(t, "proxy-echoes-request", "", (400, "<html><body><h1>Request refused</h1><pre>{request}</pre></body></html>"))
    seed(t, "waf-echoes-form", "", (403, "Request blocked by policy. Request data: {body}"))
    seed(t, "truncated", "", (200, STS_OK[:300]))


def google() -> None:
    t = "google_responses"
    sts_ok = json.dumps({
        "access_token": "ya29.d.c0ASRXF0FUZZfederatedtokenexampleexampleexample",
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer", "expires_in": 3599})
    seed(t, "federated", "", (200, sts_ok))
    seed(t, "federated-no-expiry", "", (200, json.dumps({"access_token": "ya29.fuzz-short-lived-token-example", "token_type": "Bearer"})))
    iam_ok = json.dumps({"accessToken": "ya29.c.b0AXv0zTFUZZserviceaccounttokenexampleexample", "expireTime": "2026-01-01T01:00:00Z"})
    seed(t, "impersonated", "sa", (200, sts_ok), (200, iam_ok))
    seed(t, "impersonated-fraction-offset", "sa", (200, sts_ok), (200, iam_ok.replace("01:00:00Z", "02:00:00.5+01:00")))
    id_token = jwt({"alg": "RS256", "kid": "google-1", "typ": "JWT"}, {
        "aud": "https://api.example.com", "azp": "109876543210987654321", "email": "fuzz@keyfed-fuzz.iam.gserviceaccount.com",
        "email_verified": True, "exp": NOW + 3600, "iat": NOW, "iss": "https://accounts.google.com", "sub": "109876543210987654321"}, rs256)
    seed(t, "id-token", "sa id", (200, sts_ok), (200, json.dumps({"token": id_token})))
    seed(t, "sts-invalid-grant", "", (400, json.dumps({
        "error": "invalid_grant",
        "error_description": "The audience in ID Token [https://iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/fuzz/providers/keycloak] does not match the expected audience."})))
    seed(t, "sts-invalid-target", "", (400, json.dumps({
        "error": "invalid_target",
        "error_description": "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist."})))
    seed(t, "sts-api-disabled", "", (403, json.dumps({"error": {
        "code": 403, "message": "Security Token Service API has not been used in project 123456789 before or it is disabled.",
        "status": "PERMISSION_DENIED", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED",
                                                    "domain": "googleapis.com", "metadata": {"service": "sts.googleapis.com", "consumer": "projects/123456789"}}]}})))
    seed(t, "iam-permission-denied", "sa", (200, sts_ok), (403, json.dumps({"error": {
        "code": 403, "message": "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
        "status": "PERMISSION_DENIED", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "IAM_PERMISSION_DENIED",
                                                    "domain": "iam.googleapis.com", "metadata": {"permission": "iam.serviceAccounts.getAccessToken"}}]}})))
    seed(t, "iam-quota", "sa id", (200, sts_ok), (429, json.dumps({"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}})))
    seed(t, "proxy-echoes-request", "sa", (200, sts_ok), (502, "<html><body>Bad gateway<pre>{request}</pre></body></html>"))
    seed(t, "sts-echoes-request", "", (400, "<html><body>{request}</body></html>"))
    seed(t, "waf-echoes-form", "sa", (403, "Request blocked by policy. Request data: {body}"))


def entra() -> None:
    t = "entra_responses"
    token = jwt({"typ": "JWT", "alg": "RS256", "kid": "entra-1"}, {
        "aud": "https://management.azure.com", "iss": "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
        "iat": NOW, "nbf": NOW, "exp": NOW + 3599, "oid": "5ec2e7ed-0000-4000-8000-000000000001",
        "appid": "af3110ba-0ba9-4412-b1a0-59f50b7e9273", "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47"}, rs256)
    ok = {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}
    seed(t, "token", "", (200, json.dumps(ok)))
    seed(t, "token-expires-in-string", "", (200, json.dumps(dict(ok, expires_in="3599"))))
    def refusal(code: int, error: str, text: str) -> str:
        return json.dumps({
            "error": error,
            "error_description": f"AADSTS{code}: {text}\r\nTrace ID: 0e1f2a3b-4c5d-6e7f-8091-a2b3c4d5e6f7\r\nCorrelation ID: 9f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0\r\nTimestamp: 2026-01-01 00:00:00Z",
            "error_codes": [code], "timestamp": "2026-01-01 00:00:00Z",
            "trace_id": "0e1f2a3b-4c5d-6e7f-8091-a2b3c4d5e6f7", "correlation_id": "9f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0",
            "error_uri": "https://login.microsoftonline.com/error?code=%d" % code})
    seed(t, "no-matching-federated-credential", "", (400, refusal(70021, "invalid_request",
        "No matching federated identity record found for presented assertion. Assertion Issuer: 'https://sso.example.com/realms/infra'. Assertion Subject: 'host-fuzz'. Assertion Audience: 'api://AzureADTokenExchange'.")))
    seed(t, "assertion-expired", "", (400, refusal(700024, "invalid_client", "Client assertion is not within its valid time range.")))
    seed(t, "unknown-tenant", "", (400, refusal(90002, "invalid_request", "Tenant '72f988bf-86f1-41af-91ab-2d7cd011db47' not found.")))
    seed(t, "throttled", "", (429, refusal(50196, "temporarily_unavailable", "The server terminated an operation because it encountered a client request loop.")))
    seed(t, "proxy-echoes-request", "", (403, "<html><body>Forbidden by policy<pre>{request}</pre></body></html>"))
    seed(t, "waf-echoes-form", "", (403, "Request blocked by policy. Request data: {body}"))
    seed(t, "truncated", "", (200, json.dumps(ok)[:80]))


def claims_seeds() -> None:
    folder = CORPUS / "token_claims"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keycloak-access-token").write_text(RS_TOKEN)
    (folder / "two-audiences").write_text(jwt({"alg": "ES256"}, claims(aud=["sts.amazonaws.com", "account"]), es256))
    (folder / "control-characters").write_text(jwt({"alg": "RS256"}, claims(sub="a\nhint: forged", iss="x\u0007"), rs256))
    (folder / "fractional-times").write_text(jwt({"alg": "RS256"}, claims(exp=1767225900.5, nbf=-1, iat=1e300), rs256))
    (folder / "padded").write_text(RS_TOKEN.replace(".", "==.", 2))
    (folder / "not-a-jwt").write_text("ya29.a0AfB_byFUZZaccesstoken")


if __name__ == "__main__":
    keycloak()
    sts()
    google()
    entra()
    claims_seeds()
