"""SES v2 adapter: exact signed requests, botocore's model, Simple vs Raw, the error table."""

from __future__ import annotations

import base64
import datetime
import email.utils
import re
import sys
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import botocore.auth  # type: ignore[import-untyped]
import botocore.session  # type: ignore[import-untyped]
import orjson
import pytest
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from botocore.validate import ParamValidator  # type: ignore[import-untyped]
from vendor_kit import (
    MESSAGE_ID,
    NOW,
    PDF,
    PNG,
    FakeTransport,
    json_of,
    load_contract,
    minimal_message,
    no_aws_environment,
    rich_message,
    vendor_factory,
)

from mailmux.message import Address, Attachment, Message
from mailmux.mime import parse_mime
from mailmux.vendors.base import AttemptResult, HttpResponse, Outcome
from mailmux.vendors.ses import QUOTA_RETRY_AFTER, SesVendor

CONTRACT = load_contract("sesv2.send.ref.json")
KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
MODEL = botocore.session.get_session().get_service_model("sesv2")
SEND_EMAIL = MODEL.operation_model("SendEmail")
ACCEPTED = HttpResponse(200, {}, b'{"MessageId": "ses-1"}')


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An AWS environment with nothing in it; the shared config file's path, unwritten."""
    return no_aws_environment(monkeypatch, tmp_path)


vendor = vendor_factory(
    SesVendor, "aws", ACCEPTED, region="eu-west-1", access_key_id=KEY_ID, secret_access_key=SECRET
)


def body_of(message: Message, ses: SesVendor | None = None) -> dict[str, Any]:
    return json_of((ses or vendor()).build_request(message, MESSAGE_ID))


def raw_of(body: dict[str, Any]) -> bytes:
    return base64.b64decode(body["Content"]["Raw"]["Data"], validate=True)


# -- botocore's model as the contract ----------------------------------------------------


def as_params(body: dict[str, Any]) -> dict[str, Any]:
    """The JSON body as boto3 parameters: blobs (base64 in JSON) back to bytes."""
    params = orjson.loads(orjson.dumps(body))
    content = params["Content"]
    if "Raw" in content:
        content["Raw"]["Data"] = raw_of(body)
    for attachment in content.get("Simple", {}).get("Attachments", []):
        attachment["RawContent"] = base64.b64decode(attachment["RawContent"], validate=True)
    return dict(params)


def model_errors(value: Any, shape: Any, path: str = "") -> list[str]:
    """What ParamValidator leaves out: string max lengths, patterns, enums, list sizes."""
    errors = []
    meta = shape.metadata
    if shape.type_name == "string":
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"{path}: longer than {meta['max']}")
        if "pattern" in meta and not re.fullmatch(meta["pattern"], value):  # as documented
            errors.append(f"{path}: does not match {meta['pattern']}")
        if "enum" in meta and value not in meta["enum"]:
            errors.append(f"{path}: not one of {meta['enum']}")
    elif shape.type_name == "list":
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"{path}: more than {meta['max']} items")
        for index, item in enumerate(value):
            errors += model_errors(item, shape.member, f"{path}[{index}]")
    elif shape.type_name == "structure":
        for name, member in shape.members.items():
            if name in value:
                errors += model_errors(value[name], member, f"{path}.{name}")
    return errors


def assert_valid(body: dict[str, Any]) -> None:
    params = as_params(body)
    report = ParamValidator().validate(params, SEND_EMAIL.input_shape)
    assert not report.has_errors(), report.generate_report()
    assert model_errors(params, SEND_EMAIL.input_shape) == []


def test_the_contract_pointer_cites_botocore_and_matches_the_installed_model() -> None:
    assert CONTRACT["x-contract"]["source"]["package"] == "botocore (PyPI)"
    verified = CONTRACT["x-contract"]["verified"]
    assert verified["http"] == "POST /v2/email/outbound-emails"
    assert (SEND_EMAIL.http["method"], SEND_EMAIL.http["requestUri"]) == (
        "POST",
        "/v2/email/outbound-emails",
    )
    assert MODEL.signing_name == "ses"
    assert [e.name for e in SEND_EMAIL.error_shapes] == verified["error_shapes"]


# -- Message → signed request --------------------------------------------------------------


def test_rich_message_becomes_the_exact_signed_request() -> None:
    request = vendor().build_request(rich_message(), MESSAGE_ID)

    assert request.method == "POST"
    assert request.url == "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails"
    assert request.headers == {
        "Content-Type": "application/json",
        "X-Amz-Date": "20270115T080000Z",
        "Authorization": (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20270115/eu-west-1/ses/aws4_request,"
            " SignedHeaders=content-type;host;x-amz-date,"
            " Signature=386a706700f3050d019a8908d322d46b2f657ddc38a0295c26c4f6eeec3a6a94"
        ),
    }
    assert orjson.loads(request.body) == {
        "FromEmailAddress": "=?utf-8?b?Wm/DqyDDhWxhbmRlcg==?= <noreply@example.com>",
        "Destination": {
            "ToAddresses": ["=?utf-8?q?Ana_Mar=C3=ADa?= <ana@example.org>", "bo@example.net"],
            "CcAddresses": ["=?utf-8?b?6ZmI5Lyf?= <chen@example.com>"],
            "BccAddresses": ["audit@example.com"],
        },
        "ReplyToAddresses": ["=?utf-8?b?U3VwcG9ydCDinIk=?= <support@example.com>"],
        "Content": {
            "Simple": {
                "Subject": {"Data": "Your receipt — №42 ✓", "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": "Thanks for your order.\n", "Charset": "UTF-8"},
                    "Html": {"Data": '<p>Thanks! <img src="cid:logo@x"></p>', "Charset": "UTF-8"},
                },
                "Headers": [
                    {"Name": "X-Campaign", "Value": "spring"},
                    {"Name": "List-Unsubscribe", "Value": "<mailto:u@example.com>"},
                ],
                "Attachments": [
                    {
                        "RawContent": base64.b64encode(PNG).decode(),
                        "FileName": "logo.png",
                        "ContentType": "image/png",
                        "ContentDisposition": "INLINE",
                        "ContentId": "logo@x",
                    },
                    {
                        "RawContent": base64.b64encode(PDF).decode(),
                        "FileName": "reçu.pdf",
                        "ContentType": "application/pdf",
                        "ContentDisposition": "ATTACHMENT",
                    },
                ],
            }
        },
        "EmailTags": [
            {"Name": "order_id", "Value": "42"},
            {"Name": "customer", "Value": "c-7"},
            {"Name": "receipt", "Value": "true"},
            {"Name": "spring", "Value": "true"},
        ],
    }


def test_the_signature_is_botocores_own_at_the_clocks_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    request = vendor().build_request(rich_message(), MESSAGE_ID)
    # botocore's plain signer, its clock pinned to the same instant, signs the same bytes.
    pinned = datetime.datetime(2027, 1, 15, 8, 0, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: pinned)
    reference = AWSRequest(
        method="POST",
        url=request.url,
        headers={"Content-Type": "application/json"},
        data=request.body,
    )
    botocore.auth.SigV4Auth(Credentials(KEY_ID, SECRET), "ses", "eu-west-1").add_auth(reference)
    assert dict(reference.headers.items()) == request.headers


def test_each_request_is_signed_at_its_own_time() -> None:
    ses = vendor()
    first = ses.build_request(rich_message(), MESSAGE_ID)
    ses.clock = lambda: NOW + 86_400 + 61
    second = ses.build_request(rich_message(), MESSAGE_ID)
    assert second.headers["X-Amz-Date"] == "20270116T080101Z"
    assert "/20270116/eu-west-1/ses/aws4_request" in second.headers["Authorization"]
    assert second.headers["Authorization"] != first.headers["Authorization"]


def test_base_url_replaces_the_regional_endpoint() -> None:
    request = vendor(base_url="http://127.0.0.1:4566/").build_request(rich_message(), MESSAGE_ID)
    assert request.url == "http://127.0.0.1:4566/v2/email/outbound-emails"
    assert "/eu-west-1/ses/aws4_request" in request.headers["Authorization"]


def test_minimal_message_leaves_out_every_empty_field() -> None:
    message = minimal_message(text=None, html="<b>x")
    assert body_of(message) == {
        "FromEmailAddress": "a@example.com",
        "Destination": {"ToAddresses": ["b@example.com"]},
        "Content": {
            "Simple": {
                "Subject": {"Data": "Hi", "Charset": "UTF-8"},
                "Body": {"Html": {"Data": "<b>x", "Charset": "UTF-8"}},
            }
        },
    }


def test_ascii_names_are_quoted_where_needed_and_idn_domains_go_out_in_punycode() -> None:
    body = body_of(
        rich_message(
            sender=Address("shop@bücher.example", "Shop, Inc."),
            to=(Address("a@example.com", 'Doe "JD" Jane'), Address("b@example.com", "Plain")),
            cc=(),
            bcc=(),
        )
    )
    assert body["FromEmailAddress"] == '"Shop, Inc." <shop@xn--bcher-kva.example>'
    assert body["Destination"] == {
        "ToAddresses": ['"Doe \\"JD\\" Jane" <a@example.com>', "Plain <b@example.com>"]
    }


def test_a_long_unicode_name_becomes_several_encoded_words_on_one_line() -> None:
    name = "陈伟" * 30
    sender = body_of(rich_message(sender=Address("a@example.com", name)))["FromEmailAddress"]
    assert "\n" not in sender and "\r" not in sender
    words = sender.removesuffix(" <a@example.com>").split(" ")
    assert len(words) > 1 and all(len(w) <= 75 for w in words)
    encoded_name, address = email.utils.parseaddr(sender)
    assert address == "a@example.com"
    assert str(make_header(decode_header(encoded_name))) == name


# -- Raw content ----------------------------------------------------------------------


def test_raw_mime_goes_out_as_is_with_the_envelope_and_tags() -> None:
    raw = (
        b"From: Zo\xc3\xab <noreply@example.com>\r\nTo: ana@example.org\r\n"
        b"Subject: hi\r\n\r\nhello\r\n"
    )
    body = body_of(rich_message(raw_mime=raw, reply_to=()))
    assert raw_of(body) == raw
    assert body == {
        "FromEmailAddress": "noreply@example.com",
        "Destination": {
            "ToAddresses": ["ana@example.org", "bo@example.net"],
            "CcAddresses": ["chen@example.com"],
            "BccAddresses": ["audit@example.com"],
        },
        "Content": {"Raw": {"Data": base64.b64encode(raw).decode()}},
        "EmailTags": [
            {"Name": "order_id", "Value": "42"},
            {"Name": "customer", "Value": "c-7"},
            {"Name": "receipt", "Value": "true"},
            {"Name": "spring", "Value": "true"},
        ],
    }
    assert_valid(body)


def test_a_message_simple_cannot_hold_is_rendered_to_raw_mime() -> None:
    message = rich_message(headers={"X-Note": "naïve café"})  # Simple headers are ASCII only
    body = body_of(message)
    raw = raw_of(body)
    assert message_from_bytes(raw, policy=policy.default)["Date"].datetime.timestamp() == NOW
    assert "ReplyToAddresses" not in body  # the Reply-To header is in the MIME
    assert body["FromEmailAddress"] == "noreply@example.com"
    assert body["Destination"]["BccAddresses"] == ["audit@example.com"]
    parsed = parse_mime(raw)
    assert parsed.sender == message.sender
    assert (parsed.to, parsed.cc, parsed.reply_to) == (message.to, message.cc, message.reply_to)
    # render_mime ends every body with a line end
    assert (parsed.subject, parsed.text, parsed.html) == (
        message.subject,
        message.text,
        f"{message.html}\n",
    )
    assert parsed.headers == {"X-Note": "naïve café"}
    assert parsed.attachments == message.attachments
    assert_valid(body)


@pytest.mark.parametrize(
    ("cc", "bcc", "destination"),
    [
        ((), (Address("audit@example.com"),), {"BccAddresses": ["audit@example.com"]}),
        ((Address("chen@example.com"),), (), {"CcAddresses": ["chen@example.com"]}),
        (
            (Address("chen@example.com"),),
            (Address("audit@example.com"),),
            {"CcAddresses": ["chen@example.com"], "BccAddresses": ["audit@example.com"]},
        ),
    ],
    ids=["bcc", "cc", "cc+bcc"],
)
@pytest.mark.parametrize("form", ["Simple", "Raw"])
def test_a_message_without_to_has_a_destination_without_to(
    cc: tuple[Address, ...], bcc: tuple[Address, ...], destination: dict[str, Any], form: str
) -> None:
    """SES takes any one of ToAddresses, CcAddresses and BccAddresses alone."""
    headers = {"X-Note": "naïve"} if form == "Raw" else {"X-Campaign": "spring"}
    body = body_of(rich_message(to=(), cc=cc, bcc=bcc, headers=headers))
    assert list(body["Content"]) == [form]
    assert body["Destination"] == destination
    if form == "Raw":
        raw = raw_of(body)
        mime = message_from_bytes(raw, policy=policy.default)
        assert mime["Bcc"] is None
        assert (mime["To"] is None) if cc else (str(mime["To"]) == "undisclosed-recipients:;")
        assert b"audit@" not in raw
    assert_valid(body)


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": ""},
        {"text": None, "html": None},
        {"headers": {f"X-H{i}": str(i) for i in range(16)}},
        {"headers": {"X-Long": "x" * 996}},
        {"headers": {"X-Empty": ""}},
        {
            "attachments": (
                Attachment("fwd.eml", b"From: a@example.com\r\n\r\nhi\r\n", "message/rfc822"),
            )
        },
        {"attachments": (Attachment("a" * 252 + ".pdf", PDF, "application/pdf"),)},
        {"attachments": (Attachment("a.png", PNG, "image/png", True, "c" * 79),)},
    ],
    ids=[
        "no-subject",
        "no-body",
        "16-headers",
        "header-too-long",
        "empty-header",
        "message-rfc822",
        "long-filename",
        "long-content-id",
    ],
)
def test_what_simple_cannot_hold_goes_raw_and_validates(changes: dict[str, Any]) -> None:
    message = rich_message(**changes)
    body = body_of(message)
    assert list(body["Content"]) == ["Raw"]
    assert parse_mime(raw_of(body)).subject == message.subject
    assert_valid(body)


def test_the_largest_simple_message_stays_simple() -> None:
    headers = {f"X-H{i}": str(i) for i in range(14)} | {"X-Long": "y" * (996 - len("X-Long"))}
    attachment = Attachment("a" * 251 + ".pdf", PDF, "a/" + "b" * 76, True, "c" * 78)
    body = body_of(rich_message(headers=headers, attachments=(attachment,)))
    assert list(body["Content"]) == ["Simple"]
    assert_valid(body)


@pytest.mark.parametrize(
    "message",
    [
        rich_message(),
        rich_message(tags=(), metadata={}, headers={}, attachments=(), cc=(), bcc=()),
        rich_message(text=None),
        rich_message(subject=""),
        rich_message(raw_mime=b"From: a@example.com\r\n\r\nhi\r\n"),
    ],
    ids=["rich", "plain", "html-only", "forced-raw", "raw-mime"],
)
def test_request_bodies_validate_against_botocores_sesv2_model(message: Message) -> None:
    assert_valid(body_of(message))


def test_the_model_check_catches_what_ses_would_refuse() -> None:
    body = body_of(rich_message())
    body["Content"]["Simple"]["Headers"] = [{"Name": "Bad:Name", "Value": "é"}]
    errors = model_errors(as_params(body), SEND_EMAIL.input_shape)
    assert len(errors) == 2
    body["Bogus"] = 1
    assert ParamValidator().validate(as_params(body), SEND_EMAIL.input_shape).has_errors()


# -- what SES cannot carry --------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            rich_message(to=tuple(Address(f"r{i}@example.com") for i in range(49))),
            "51 recipients; SES takes at most 50",
        ),
        (rich_message(sender=Address("zoë@example.com")), "zoë@example.com: SES does not support"),
        (rich_message(bcc=(Address("用户@example.com"),)), "SMTPUTF8"),
        (rich_message(attachments=(Attachment("setup.EXE", b"MZ"),)), ".exe attachments"),
        (
            rich_message(
                raw_mime=b"From: a@example.com\r\n\r\nhi\r\n",
                attachments=(Attachment("run.bat", b"@echo"),),
            ),
            "'run.bat': SES refuses .bat",
        ),
        (rich_message(tags=("spring sale",)), "tag name 'spring sale'"),
        (rich_message(metadata={"user": "ana@example.org"}), "tag value 'ana@example.org'"),
        (rich_message(metadata={"ref": ""}), "tag value ''"),
        (rich_message(tags=("t" * 257,)), "1 to 256 ASCII letters"),
        (rich_message(tags=("customer",)), "tag 'customer' is also a metadata key"),
        (
            rich_message(attachments=(Attachment("big.bin", bytes(31 * 2**20)),)),
            "SES takes at most 40 MB",
        ),
    ],
    ids=[
        "recipients",
        "smtputf8-sender",
        "smtputf8-bcc",
        "blocked-extension",
        "blocked-extension-in-raw",
        "tag-charset",
        "metadata-charset",
        "empty-metadata",
        "tag-length",
        "tag-metadata-clash",
        "size",
    ],
)
async def test_unsupported_features_end_as_unsupported_without_a_request(
    message: Message, reason: str
) -> None:
    transport = FakeTransport(ACCEPTED)
    result = await vendor(transport).send(message, timeout=5.0, message_id=MESSAGE_ID)

    assert result.outcome is Outcome.UNSUPPORTED
    assert reason in result.reason
    assert transport.calls == []


def test_fifty_recipients_and_extensionless_names_are_fine() -> None:
    to = tuple(Address(f"r{i}@example.com") for i in range(48))  # + 1 cc + 1 bcc
    body = body_of(rich_message(to=to, attachments=(Attachment("exe", b"x"),)))
    assert len(body["Destination"]["ToAddresses"]) == 48


def test_the_idempotency_key_has_no_ses_counterpart_and_is_not_sent() -> None:
    request = vendor().build_request(rich_message(idempotency_key="order-42"), MESSAGE_ID)
    assert b"order-42" not in request.body
    assert "order-42" not in str(request.headers)


# -- send through the pipeline ----------------------------------------------------------


async def test_send_hands_the_request_to_the_transport_and_reads_the_message_id() -> None:
    answer = b'{"MessageId": "0100018f-8b6e-4a4b-9f1c-000000"}'
    transport = FakeTransport(HttpResponse(200, {"x-amzn-requestid": "r-1"}, answer))
    result = await vendor(transport).send(rich_message(), timeout=3.5, message_id=MESSAGE_ID)

    assert result == AttemptResult(
        Outcome.ACCEPTED, vendor_message_id="0100018f-8b6e-4a4b-9f1c-000000", status=200
    )
    ((request, timeout),) = transport.calls
    assert timeout == 3.5
    assert request.url.endswith("/v2/email/outbound-emails")


# -- credentials --------------------------------------------------------------------------


def test_credentials_come_from_the_environment_when_not_configured(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token")
    ses = vendor(access_key_id=None, secret_access_key=None)
    headers = ses.build_request(rich_message(), MESSAGE_ID).headers
    assert headers["X-Amz-Security-Token"] == "session-token"
    assert "Credential=AKIAENVIRONMENT/20270115/eu-west-1/ses/" in headers["Authorization"]
    assert (
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"
        in (headers["Authorization"])
    )


def test_configured_keys_win_over_the_environment(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    headers = vendor().build_request(rich_message(), MESSAGE_ID).headers
    assert f"Credential={KEY_ID}/" in headers["Authorization"]
    assert "X-Amz-Security-Token" not in headers


def test_no_credentials_anywhere_is_a_configuration_error(aws_env: Path) -> None:
    with pytest.raises(ValueError, match="vendor 'aws': no AWS credentials"):
        SesVendor("aws", FakeTransport(ACCEPTED), region="eu-west-1")


@pytest.mark.parametrize(
    "settings",
    [
        {"region": "eu-west-1", "access_key_id": KEY_ID},
        {"region": "eu-west-1", "secret_access_key": SECRET},
        {"region": "", "access_key_id": KEY_ID, "secret_access_key": SECRET},
    ],
    ids=["key-id-only", "secret-only", "no-region"],
)
def test_half_a_key_pair_or_no_region_is_a_configuration_error(
    aws_env: Path, settings: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="vendor 'aws': SES needs"):
        SesVendor("aws", FakeTransport(ACCEPTED), **settings)


def test_an_unknown_profile_is_a_configuration_error(
    aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "nope")
    with pytest.raises(ValueError, match="could not be loaded"):
        SesVendor("aws", FakeTransport(ACCEPTED), region="eu-west-1")


@pytest.fixture
def process_credentials(aws_env: Path, tmp_path: Path) -> Path:
    """A shared config whose `credential_process` hands out numbered keys: the first
    expires in 5 minutes (inside botocore's refresh window), later ones in an hour. The
    process fails once a file named `fail` exists. Returns the directory it counts in."""
    script = tmp_path / "creds.py"
    script.write_text(
        "import datetime, json, pathlib, sys\n"
        f"here = pathlib.Path({str(tmp_path)!r})\n"
        "if (here / 'fail').exists(): sys.exit('no credentials today')\n"
        "count = here / 'count'\n"
        "n = int(count.read_text()) + 1 if count.exists() else 1\n"
        "count.write_text(str(n))\n"
        "minutes = 5 if n == 1 else 60\n"
        "expiry = datetime.datetime.now(datetime.timezone.utc)"
        " + datetime.timedelta(minutes=minutes)\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': f'AKIAPROCESS{n}',"
        " 'SecretAccessKey': 's', 'SessionToken': f't{n}', 'Expiration': expiry.isoformat()}))\n"
    )
    aws_env.write_text(f"[default]\ncredential_process = {sys.executable} {script}\n")
    return tmp_path


async def test_refreshable_credentials_are_refreshed_before_they_expire(
    process_credentials: Path,
) -> None:
    transport = FakeTransport(ACCEPTED)
    ses = SesVendor("aws", transport, region="eu-west-1")
    assert (process_credentials / "count").read_text() == "1"

    result = await ses.send(rich_message(), timeout=1.0, message_id=MESSAGE_ID)

    assert result.outcome is Outcome.ACCEPTED
    ((request, _),) = transport.calls
    assert "Credential=AKIAPROCESS2/" in request.headers["Authorization"]
    assert request.headers["X-Amz-Security-Token"] == "t2"
    await ses.send(
        rich_message(), timeout=1.0, message_id=MESSAGE_ID
    )  # fresh for an hour: no third call
    assert (process_credentials / "count").read_text() == "2"


async def test_credentials_that_cannot_be_refreshed_are_vendor_config(
    process_credentials: Path,
) -> None:
    transport = FakeTransport(ACCEPTED)
    ses = SesVendor("aws", transport, region="eu-west-1")
    (process_credentials / "fail").touch()

    result = await ses.send(rich_message(), timeout=1.0, message_id=MESSAGE_ID)

    assert result.outcome is Outcome.VENDOR_CONFIG
    assert result.reason.startswith("AWS credentials could not be refreshed")
    assert transport.calls == []


# -- answer → outcome -----------------------------------------------------------------------


def parse(
    status: int,
    kind: str | None = None,
    message: str = "",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> AttemptResult:
    all_headers = dict(headers or {})
    if kind is not None and body is None:
        all_headers.setdefault("x-amzn-errortype", kind)
        body = orjson.dumps({"message": message})
    return vendor().parse_response(HttpResponse(status, all_headers, body or b""))


def test_2xx_is_accepted_even_without_an_id() -> None:
    assert parse(200, body=b'{"MessageId": "m-1"}') == AttemptResult(
        Outcome.ACCEPTED, vendor_message_id="m-1", status=200
    )
    assert parse(200, body=b"not json") == AttemptResult(Outcome.ACCEPTED, status=200)


@pytest.mark.parametrize(
    ("status", "kind", "message", "outcome", "words"),
    [
        (400, "MessageRejected", "Illegal address", Outcome.PERMANENT, "MessageRejected: Illegal"),
        (
            400,
            "MessageRejected",
            "Email address is not verified. The following identities failed the check in"
            " region EU-WEST-1: noreply@example.com",
            Outcome.VENDOR_CONFIG,
            "identity not verified",
        ),
        (
            400,
            "MessageRejected",
            "User is not authorized to perform ses:SendEmail on resource",
            Outcome.VENDOR_CONFIG,
            "identity not verified",
        ),
        (
            400,
            "MessageRejected",
            "Sending suspended for this account.",
            Outcome.VENDOR_CONFIG,
            "suspended or paused",
        ),
        (400, "BadRequestException", "Missing subject", Outcome.PERMANENT, "Missing subject"),
        (400, "InvalidParameterValue", "Missing domain", Outcome.PERMANENT, "Missing domain"),
        (
            400,
            "MailFromDomainNotVerifiedException",
            "MAIL FROM domain not verified",
            Outcome.VENDOR_CONFIG,
            "MAIL FROM domain is not verified",
        ),
        (400, "AccountSuspendedException", "x", Outcome.VENDOR_CONFIG, "account is suspended"),
        (400, "SendingPausedException", "x", Outcome.VENDOR_CONFIG, "sending is paused"),
        (404, "NotFoundException", "No such set", Outcome.VENDOR_CONFIG, "configuration set"),
        (403, "AccessDeniedException", "not allowed", Outcome.VENDOR_CONFIG, "ses:SendEmail"),
        (403, "AccessDenied", "not allowed", Outcome.VENDOR_CONFIG, "ses:SendEmail"),
        (403, "SignatureDoesNotMatch", "bad sig", Outcome.VENDOR_CONFIG, "secret_access_key"),
        (
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
            Outcome.VENDOR_CONFIG,
            "check access_key_id",
        ),
        (403, "InvalidClientTokenId", "x", Outcome.VENDOR_CONFIG, "check access_key_id"),
        (403, "RequestExpired", "x", Outcome.VENDOR_CONFIG, "system clock"),
        (403, "SomethingNew", "x", Outcome.VENDOR_CONFIG, "permissions rejected"),
        (401, None, "", Outcome.VENDOR_CONFIG, "permissions rejected"),
        (404, None, "", Outcome.VENDOR_CONFIG, "check base_url"),
        (301, None, "", Outcome.VENDOR_CONFIG, "check base_url"),
        (500, "InternalFailure", "oops", Outcome.RETRIABLE, "InternalFailure: oops"),
        (503, "ServiceUnavailable", "later", Outcome.RETRIABLE, "ServiceUnavailable: later"),
        (400, "SerializationException", "x", Outcome.RETRIABLE, "unexpected answer"),
        (409, None, "", Outcome.RETRIABLE, "unexpected answer: Conflict"),
    ],
)
def test_error_types_map_to_outcomes(
    status: int, kind: str | None, message: str, outcome: Outcome, words: str
) -> None:
    result = parse(status, kind, message)
    assert (result.outcome, result.status) == (outcome, status)
    assert words in result.reason
    assert result.retry_after is None


@pytest.mark.parametrize(
    ("status", "kind", "message", "reason", "retry_after"),
    [
        (
            429,
            "TooManyRequestsException",
            "Too many requests",
            "rate limited: TooManyRequestsException: Too many requests",
            1.0,
        ),
        (
            400,
            "ThrottlingException",
            "Maximum sending rate exceeded.",
            "rate limited: ThrottlingException: Maximum sending rate exceeded.",
            1.0,
        ),
        (
            400,
            "ThrottlingException",
            "Daily message quota exceeded.",
            "quota exhausted: ThrottlingException: Daily message quota exceeded.",
            QUOTA_RETRY_AFTER,
        ),
        (
            400,
            "Throttling",
            "Daily message quota exceeded.",
            "quota exhausted: Throttling: Daily message quota exceeded.",
            600.0,
        ),
        (
            400,
            "LimitExceededException",
            "Too many",
            "rate limited (account limit): LimitExceededException: Too many",
            None,
        ),
        (429, None, "", "rate limited: Too Many Requests", 1.0),
        (
            400,
            "MessageRejected",
            "Daily message quota exceeded.",
            "quota exhausted: MessageRejected: Daily message quota exceeded.",
            600.0,
        ),
        (
            400,
            "MessageRejected",
            "Maximum sending rate exceeded.",
            "rate limited: MessageRejected: Maximum sending rate exceeded.",
            1.0,
        ),
    ],
)
def test_throttling_and_quotas_are_rate_limited(
    status: int, kind: str | None, message: str, reason: str, retry_after: float | None
) -> None:
    assert parse(status, kind, message) == AttemptResult(
        Outcome.RATE_LIMITED, status=status, reason=reason, retry_after=retry_after
    )


def test_retry_after_wins_when_present() -> None:
    assert parse(429, "TooManyRequestsException", headers={"retry-after": "7"}).retry_after == 7.0
    quota = parse(
        400, "ThrottlingException", "Daily message quota exceeded.", {"retry-after": "30"}
    )
    assert quota.retry_after == 30.0
    assert parse(503, "ServiceUnavailable", headers={"retry-after": "9"}).retry_after == 9.0


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (
            {
                "x-amzn-errortype": "MessageRejected:http://internal.amazon.com/coral/com.amazon.ses/"
            },
            b'{"message": "Illegal address"}',
        ),
        ({}, b'{"__type": "com.amazonaws.sesv2#MessageRejected", "Message": "Illegal address"}'),
        ({}, b'{"__type": "MessageRejected", "message": "Illegal address"}'),
    ],
    ids=["header-with-suffix", "body-with-prefix", "body-plain"],
)
def test_the_error_type_is_read_from_the_header_or_the_body(
    headers: dict[str, str], body: bytes
) -> None:
    result = parse(400, headers=headers, body=body)
    assert result == AttemptResult(
        Outcome.PERMANENT, status=400, reason="MessageRejected: Illegal address"
    )


def test_every_error_the_model_declares_is_classified_on_purpose() -> None:
    for shape in SEND_EMAIL.error_shapes:
        result = parse(shape.metadata["error"]["httpStatusCode"], shape.name, "m")
        assert "unexpected" not in result.reason, shape.name
        assert result.outcome is not Outcome.RETRIABLE, shape.name


def test_reason_falls_back_to_the_body_then_to_the_status_phrase_and_stays_short() -> None:
    assert parse(502, body=b"<html>Bad gateway</html>").reason == "<html>Bad gateway</html>"
    assert parse(502).reason == "Bad Gateway"
    long = parse(400, "BadRequestException", "x" * 1000).reason
    assert len(long) == 300 and long.endswith("…")
