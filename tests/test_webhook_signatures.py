from __future__ import annotations

import base64

import pytest

from app.webhooks.signatures import (
    MAX_SIGNATURES,
    SignatureError,
    parse_standard_secret,
    sign_github,
    sign_standard,
    verify_github,
    verify_standard,
)

# The Standard Webhooks test vector, from standard-webhooks/standard-webhooks:
# libraries/python/tests/test_webhooks.py (test_sign_function), the same in
# libraries/javascript/src/webhook.test.ts ("sign function works").
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MESSAGE_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OTHER_SECRET = "whsec_" + base64.b64encode(b"another secret, 32 bytes long!!!").decode()

# GitHub's test values, from docs.github.com "Validating webhook deliveries" ("Testing the
# webhook payload validation").
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"


def standard_headers(
    signature: str = SIGNATURE, message_id: str = MESSAGE_ID, timestamp: int = TIMESTAMP
) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def github_headers(signature: str = GITHUB_SIGNATURE) -> dict[str, str]:
    return {"X-GitHub-Delivery": DELIVERY, "X-Hub-Signature-256": signature}


def reason(error: pytest.ExceptionInfo[SignatureError]) -> str:
    return error.value.reason


# Standard Webhooks


def test_sign_standard_reproduces_the_spec_test_vector():
    assert sign_standard(SECRET, MESSAGE_ID, TIMESTAMP, BODY) == SIGNATURE


def test_spec_test_vector_verifies_and_returns_the_message_id():
    assert verify_standard([SECRET], standard_headers(), BODY, now=TIMESTAMP) == MESSAGE_ID


def test_sign_standard_round_trips_through_verify_over_non_utf8_bytes():
    body = b"\xff\xfe\x00 not utf-8 \x80"
    signature = sign_standard(OTHER_SECRET, "msg_1", TIMESTAMP, body)
    headers = standard_headers(signature, message_id="msg_1")
    assert verify_standard([OTHER_SECRET], headers, body, now=TIMESTAMP) == "msg_1"


def test_tampered_body_is_rejected():
    with pytest.raises(SignatureError) as error:
        verify_standard([SECRET], standard_headers(), BODY + b" ", now=TIMESTAMP)
    assert reason(error) == "no signature matches"


def test_wrong_secret_is_rejected():
    with pytest.raises(SignatureError, match="no signature matches"):
        verify_standard([OTHER_SECRET], standard_headers(), BODY, now=TIMESTAMP)


def test_signature_made_with_the_second_of_two_secrets_is_accepted():
    headers = standard_headers()
    assert verify_standard([OTHER_SECRET, SECRET], headers, BODY, now=TIMESTAMP) == MESSAGE_ID


def test_header_with_several_signatures_is_accepted_when_only_the_last_is_valid():
    wrong = sign_standard(OTHER_SECRET, MESSAGE_ID, TIMESTAMP, BODY)
    foreign = SIGNATURE.removeprefix("v1,")
    header = f"{wrong} v1a,{foreign} v2,{foreign} {wrong} {SIGNATURE}"
    assert verify_standard([SECRET], standard_headers(header), BODY, now=TIMESTAMP) == MESSAGE_ID


def test_malformed_entries_beside_a_valid_signature_are_ignored():
    header = f"garbage v1, v1,not-base64! v1,dGVzdA== {SIGNATURE}"
    assert verify_standard([SECRET], standard_headers(header), BODY, now=TIMESTAMP) == MESSAGE_ID


@pytest.mark.parametrize(
    "header",
    [
        "v1a," + SIGNATURE.removeprefix("v1,"),
        "v2," + SIGNATURE.removeprefix("v1,"),
        SIGNATURE.removeprefix("v1,"),
        "v1,",
        "v1,dawfeoifkpqwoekfpqoekf",
        SIGNATURE[:8],
        "v1,not base64 at all!",
    ],
)
def test_header_without_a_well_formed_v1_signature_is_rejected(header):
    with pytest.raises(SignatureError, match="no v1 signature"):
        verify_standard([SECRET], standard_headers(header), BODY, now=TIMESTAMP)


def test_signature_entries_beyond_the_cap_are_not_examined():
    wrong = sign_standard(OTHER_SECRET, MESSAGE_ID, TIMESTAMP, BODY)
    last_examined = " ".join([wrong] * (MAX_SIGNATURES - 1) + [SIGNATURE])
    headers = standard_headers(last_examined)
    assert verify_standard([SECRET], headers, BODY, now=TIMESTAMP) == MESSAGE_ID
    beyond = " ".join([wrong] * MAX_SIGNATURES + [SIGNATURE])
    with pytest.raises(SignatureError, match="no signature matches"):
        verify_standard([SECRET], standard_headers(beyond), BODY, now=TIMESTAMP)


@pytest.mark.parametrize("offset", [-300, 300])
def test_timestamp_just_inside_the_tolerance_is_accepted(offset):
    now = TIMESTAMP + offset
    assert verify_standard([SECRET], standard_headers(), BODY, now=now) == MESSAGE_ID


@pytest.mark.parametrize("offset", [301, -301], ids=["stale", "future"])
def test_timestamp_just_outside_the_tolerance_is_rejected(offset):
    with pytest.raises(SignatureError) as error:
        verify_standard([SECRET], standard_headers(), BODY, now=TIMESTAMP + offset)
    assert reason(error) == "timestamp outside the tolerance"


def test_tolerance_is_configurable():
    now = TIMESTAMP + 61
    with pytest.raises(SignatureError, match="timestamp outside the tolerance"):
        verify_standard([SECRET], standard_headers(), BODY, now=now, tolerance=60)
    headers = standard_headers()
    assert verify_standard([SECRET], headers, BODY, now=now, tolerance=61) == MESSAGE_ID


def test_timestamp_is_checked_against_the_clock_when_now_is_not_given():
    with pytest.raises(SignatureError, match="timestamp outside the tolerance"):
        verify_standard([SECRET], standard_headers(), BODY)


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_rejected(name):
    headers = standard_headers()
    del headers[name]
    with pytest.raises(SignatureError) as error:
        verify_standard([SECRET], headers, BODY, now=TIMESTAMP)
    assert reason(error) == f"missing {name} header"


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_empty_header_counts_as_missing(name):
    headers = standard_headers() | {name: ""}
    with pytest.raises(SignatureError, match=f"missing {name} header"):
        verify_standard([SECRET], headers, BODY, now=TIMESTAMP)


def test_header_names_are_case_insensitive():
    headers = {
        "Webhook-Id": MESSAGE_ID,
        "WEBHOOK-TIMESTAMP": str(TIMESTAMP),
        "Webhook-Signature": SIGNATURE,
    }
    assert verify_standard([SECRET], headers, BODY, now=TIMESTAMP) == MESSAGE_ID


@pytest.mark.parametrize(
    "timestamp",
    ["hello", "1614265330.0", "-1614265330", "+1614265330", "1_614_265_330", " 1614265330"],
)
def test_non_integer_timestamp_is_rejected(timestamp):
    headers = standard_headers() | {"webhook-timestamp": timestamp}
    with pytest.raises(SignatureError, match="webhook-timestamp is not an integer"):
        verify_standard([SECRET], headers, BODY, now=TIMESTAMP)


def test_message_id_with_a_dot_cannot_reuse_a_signature_for_another_body():
    # A signature over "msg.T.T2.evil" also reads as id "msg.T", timestamp T2, body "evil".
    later = TIMESTAMP + 60
    signature = sign_standard(SECRET, "msg", TIMESTAMP, f"{later}.evil".encode())
    headers = standard_headers(signature, message_id=f"msg.{TIMESTAMP}", timestamp=later)
    with pytest.raises(SignatureError, match="webhook-id must not contain"):
        verify_standard([SECRET], headers, b"evil", now=later)


def test_rejection_reasons_never_reveal_a_secret_or_the_expected_signature():
    tampered = BODY + b"!"
    cases = [
        (standard_headers(), tampered, sign_standard(SECRET, MESSAGE_ID, TIMESTAMP, tampered)),
        (standard_headers("v1,AAAA"), BODY, SIGNATURE),
        (standard_headers(timestamp=TIMESTAMP + 3600), BODY, SIGNATURE),
    ]
    for headers, body, expected in cases:
        with pytest.raises(SignatureError) as error:
            verify_standard([SECRET, OTHER_SECRET], headers, body, now=TIMESTAMP)
        message = str(error.value)
        assert SECRET.removeprefix("whsec_") not in message
        assert OTHER_SECRET.removeprefix("whsec_") not in message
        assert expected.removeprefix("v1,") not in message


# Standard Webhooks secrets


def test_parse_standard_secret_returns_the_decoded_key():
    assert parse_standard_secret(SECRET) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


def test_parse_standard_secret_accepts_unpadded_base64():
    padded = "whsec_" + base64.b64encode(b"x" * 25).decode()
    assert padded.endswith("=")
    assert parse_standard_secret(padded.rstrip("=")) == b"x" * 25


@pytest.mark.parametrize(
    "secret",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_",
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"x" * 23).decode(),
        "whsec_" + base64.b64encode(b"x" * 513).decode(),
        "whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ],
    ids=["no-prefix", "empty", "not-base64", "too-short", "too-long", "asymmetric"],
)
def test_secret_not_in_whsec_form_is_a_configuration_error(secret):
    with pytest.raises(ValueError, match="^a Standard Webhooks secret must") as error:
        parse_standard_secret(secret)
    encoded = secret.removeprefix("whsec_")
    assert not encoded or encoded not in str(error.value)


def test_verify_standard_rejects_a_misconfigured_secret_before_reading_the_request():
    with pytest.raises(ValueError, match="must start with 'whsec_'"):
        verify_standard([SECRET, "plain-secret"], {}, BODY, now=TIMESTAMP)


@pytest.mark.parametrize("verify", [verify_standard, verify_github])
def test_empty_secret_list_is_a_configuration_error(verify):
    with pytest.raises(ValueError, match="no webhook secret is configured"):
        verify([], standard_headers() | github_headers(), BODY)


@pytest.mark.parametrize("verify", [verify_standard, verify_github])
def test_a_bare_string_of_secrets_is_refused(verify):
    with pytest.raises(TypeError, match="not a string"):
        verify(SECRET, standard_headers() | github_headers(), BODY)


# GitHub


def test_sign_github_reproduces_githubs_documented_example():
    assert sign_github(GITHUB_SECRET, GITHUB_BODY) == GITHUB_SIGNATURE


def test_github_signature_verifies_and_returns_the_delivery_id():
    assert verify_github([GITHUB_SECRET], github_headers(), GITHUB_BODY) == DELIVERY


def test_github_signature_round_trips_and_accepts_the_second_of_two_secrets():
    body = b'{"action": "opened", "number": 7}'
    headers = github_headers(sign_github("new-secret", body))
    assert verify_github(["old-secret", "new-secret"], headers, body) == DELIVERY


def test_github_header_names_are_case_insensitive():
    headers = {"x-github-delivery": DELIVERY, "X-HUB-SIGNATURE-256": GITHUB_SIGNATURE}
    assert verify_github([GITHUB_SECRET], headers, GITHUB_BODY) == DELIVERY


@pytest.mark.parametrize(
    ("secret", "body"),
    [(GITHUB_SECRET, GITHUB_BODY + b"\n"), ("not the secret", GITHUB_BODY)],
    ids=["tampered-body", "wrong-secret"],
)
def test_github_signature_that_does_not_match_is_rejected(secret, body):
    with pytest.raises(SignatureError) as error:
        verify_github([secret], github_headers(), body)
    assert reason(error) == "no signature matches"
    assert GITHUB_SIGNATURE.removeprefix("sha256=") not in str(error.value)


@pytest.mark.parametrize("name", ["X-GitHub-Delivery", "X-Hub-Signature-256"])
def test_github_missing_header_is_rejected(name):
    headers = github_headers()
    del headers[name]
    with pytest.raises(SignatureError) as error:
        verify_github([GITHUB_SECRET], headers, GITHUB_BODY)
    assert reason(error) == f"missing {name.lower()} header"


@pytest.mark.parametrize(
    "signature",
    [
        GITHUB_SIGNATURE.removeprefix("sha256="),
        "sha1=" + "0" * 40,
        GITHUB_SIGNATURE[:-1],
        GITHUB_SIGNATURE + "0",
        GITHUB_SIGNATURE[:-1] + "g",
        "sha256= " + GITHUB_SIGNATURE.removeprefix("sha256="),
    ],
    ids=["no-prefix", "sha1", "short", "long", "not-hex", "space"],
)
def test_github_malformed_signature_header_is_rejected(signature):
    with pytest.raises(SignatureError, match="malformed x-hub-signature-256 header"):
        verify_github([GITHUB_SECRET], github_headers(signature), GITHUB_BODY)


def test_empty_github_secret_is_a_configuration_error():
    with pytest.raises(ValueError, match="must not be empty"):
        verify_github([GITHUB_SECRET, ""], github_headers(), GITHUB_BODY)
    with pytest.raises(ValueError, match="must not be empty"):
        sign_github("", GITHUB_BODY)
