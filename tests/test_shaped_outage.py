"""A vendor outage while eight ESP SDKs send through mailmux: no SDK sees a failure.

Every SDK sends through its own shape, concurrently, on threads, in three
phases: both vendors up, the primary not listening, then the backup not
listening either, so mail is spooled; then both come back. Every SDK call must have returned its
success, and every message must reach exactly one emulator exactly once
(each has a subject of its own). "Down" refuses connections, so nothing is
ever half-sent and a duplicate would be mailmux's fault.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
import postmarker.core
import resend
import sendgrid
from brevo import Brevo
from mailgun.client import Client as MailgunClient
from mailjet_rest import Client as MailjetClient
from shaped_kit import CLIENT_KEY, CLIENT_NAME, router
from sparkpost import SparkPost

from mailmux.spool.base import MessageState

PER_SDK = 6
SENDER = "app@shop.example"
RECIPIENT = "user@example.net"

Send = Callable[[str, str], None]  # (mailmux url, subject) -> raises unless the SDK succeeded


def via_sendgrid(url: str, subject: str) -> None:
    client = sendgrid.SendGridAPIClient(CLIENT_KEY, host=url)
    mail = sendgrid.Mail(SENDER, RECIPIENT, subject, plain_text_content="hello")
    assert client.send(mail).status_code == 202


def via_mailgun(url: str, subject: str) -> None:
    with MailgunClient(auth=("api", CLIENT_KEY), api_url=url) as client:
        data = {"from": SENDER, "to": RECIPIENT, "subject": subject, "text": "hello"}
        answer = client.messages.create(data=data, domain="mg.shop.example")
    assert answer.status_code == 200, answer.text


def via_postmark(url: str, subject: str) -> None:
    client = postmarker.core.PostmarkClient(server_token=CLIENT_KEY, root_api_url=url + "/")
    try:
        answer = client.emails.send(From=SENDER, To=RECIPIENT, Subject=subject, TextBody="hello")
    finally:
        client.session.close()
    assert answer["ErrorCode"] == 0


def via_sparkpost(url: str, subject: str) -> None:
    client = SparkPost(CLIENT_KEY)
    client.transmissions.base_uri = url + "/api/v1"
    answer = client.transmissions.send(
        recipients=[RECIPIENT], from_email=SENDER, subject=subject, text="hello"
    )
    assert answer["total_accepted_recipients"] == 1


def via_ses(url: str, subject: str) -> None:
    client = boto3.client(
        "sesv2",
        endpoint_url=url,
        region_name="eu-west-1",
        aws_access_key_id=CLIENT_NAME,
        aws_secret_access_key=CLIENT_KEY,
    )
    try:
        answer = client.send_email(
            FromEmailAddress=SENDER,
            Destination={"ToAddresses": [RECIPIENT]},
            Content={"Simple": {"Subject": {"Data": subject}, "Body": {"Text": {"Data": "hello"}}}},
        )
    finally:
        client.close()
    assert answer["MessageId"]


_RESEND = threading.Lock()  # the SDK's settings are module globals


def via_resend(url: str, subject: str) -> None:
    with _RESEND:
        resend.api_url, resend.api_key = url, CLIENT_KEY
        answer = resend.Emails.send(
            {"from": SENDER, "to": [RECIPIENT], "subject": subject, "text": "hello"}
        )
    assert answer["id"]


def via_mailjet(url: str, subject: str) -> None:
    client = MailjetClient(auth=(CLIENT_NAME, CLIENT_KEY), version="v3.1", api_url=url + "/")
    message = {
        "From": {"Email": SENDER},
        "To": [{"Email": RECIPIENT}],
        "Subject": subject,
        "TextPart": "hello",
    }
    answer = client.send.create(data={"Messages": [message]})
    assert answer.status_code == 200, answer.text


def via_brevo(url: str, subject: str) -> None:
    # Its own pool, closed after the call; no OAuth client from the environment.
    with httpx.Client() as pool:
        client = Brevo(
            api_key=CLIENT_KEY,
            base_url=url + "/v3",
            client_id=None,
            client_secret=None,
            httpx_client=pool,
        )
        answer = client.transactional_emails.send_transac_email(
            sender={"email": SENDER},
            to=[{"email": RECIPIENT}],
            subject=subject,
            text_content="hello",
        )
    assert answer.message_id


SDKS: dict[str, Send] = {
    "sendgrid": via_sendgrid,
    "mailgun": via_mailgun,
    "postmark": via_postmark,
    "sparkpost": via_sparkpost,
    "ses": via_ses,
    "resend": via_resend,
    "mailjet": via_mailjet,
    "brevo": via_brevo,
}


def subjects_in(received: list[dict[str, Any]]) -> list[str]:
    """The subject of each message an emulator kept (SendGrid and Postmark bodies)."""
    found = []
    for entry in received:
        body = entry["body"]
        subject = body.get("subject") or body.get("Subject")
        if subject is None:  # SendGrid: per personalization, else top level
            subject = body["personalizations"][0].get("subject")
        found.append(subject)
    return found


async def test_an_outage_while_every_sdk_sends_is_invisible_to_them(tmp_path: Path) -> None:
    vendors = {"primary": "sendgrid", "backup": "postmark"}
    # An ejection ends within a second, so the spool drains soon after the outage.
    health = {"base_ejection_seconds": 0.5, "max_ejection_seconds": 1.0}
    async with router(tmp_path, vendors, weights={"primary": 3, "backup": 1}, health=health) as mux:
        loop = asyncio.get_running_loop()
        failures: list[str] = []
        spooled: list[int] = []  # how many messages waited in the spool during the outage

        def on_loop(change: Coroutine[Any, Any, Any]) -> Any:
            return asyncio.run_coroutine_threadsafe(change, loop).result(timeout=10)

        async def take_down(vendor: str) -> None:
            await mux.faults(vendor, {"down": True})

        async def count_spooled() -> None:
            spooled.append((await mux.app.store.count_by_state())[MessageState.QUEUED])

        # The SDKs send in three phases: both vendors up, the primary down, both down.
        # Each phase begins when every SDK has finished the one before (the barrier's
        # action runs once, in the last thread to arrive).
        phases = iter([lambda: on_loop(take_down("primary")), lambda: on_loop(take_down("backup"))])
        barrier = threading.Barrier(len(SDKS), action=lambda: next(phases)())
        per_phase = PER_SDK // 3

        def sender(shape: str, send: Send) -> Callable[[], None]:
            def run() -> None:
                for n in range(PER_SDK):
                    if n and n % per_phase == 0:
                        barrier.wait(timeout=30)
                    try:
                        send(mux.url, f"{shape}-{n}")
                    except Exception as err:  # the test's point: there must be none
                        failures.append(f"{shape}-{n}: {type(err).__name__}: {err}")

            return run

        # A thread for every SDK: the barrier needs them all running at once.
        with ThreadPoolExecutor(max_workers=len(SDKS)) as threads:
            await asyncio.gather(
                *(
                    loop.run_in_executor(threads, sender(shape, send))
                    for shape, send in SDKS.items()
                )
            )
        await count_spooled()
        await mux.faults("primary", {})
        await mux.faults("backup", {})

        assert failures == []
        assert spooled[0] >= per_phase * len(SDKS)  # at least the last phase's messages
        assert await mux.received("primary") and await mux.received("backup")
        expected = {f"{shape}-{n}" for shape in SDKS for n in range(PER_SDK)}
        for _ in range(400):  # the Retrier drains the spool within seconds
            seen = Counter(
                subjects_in(await mux.received("primary"))
                + subjects_in(await mux.received("backup"))
            )
            if set(seen) >= expected:
                break
            await asyncio.sleep(0.05)
        assert set(seen) == expected
        assert [s for s, count in seen.items() if count > 1] == []
