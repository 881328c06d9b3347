"""A SparkPost transmission (`POST /api/v1/transmissions` body) read into Messages.

SparkPost writes one email per recipient: each copy's To header is the
recipient itself unless `address.header_to` says otherwise, and CC is only a
header in `content.headers`. Its SDK sends `cc=`/`bcc=` as extra recipients
whose `header_to` is the first recipient, with the cc ones named in a `CC`
header. So the recipients are read back into groups: each recipient without
`header_to` starts a Message (its `to`), and every recipient whose `header_to`
names it joins that Message, as `cc` when the CC header lists it and as `bcc`
otherwise. A `header_to` that names no such recipient is a To header only
SparkPost can write (exclusive), and gets a Message of its own.

Choices worth knowing:
- A group's tags and metadata are its first recipient's (merged over the
  transmission's `metadata`, the recipient winning, as SparkPost merges them);
  `campaign_id` becomes one more tag. Metadata values that are not strings are
  carried as their JSON text.
- `{{` in a part SparkPost renders (subject, bodies, headers, names, header_to) is
  exclusive while `options.perform_substitutions` is not false: SparkPost
  would substitute it and another ESP would send it literally.
  `substitution_data` without any `{{` changes nothing and is dropped.
- `options.transactional` becomes the traffic class (true: `transactional`,
  false: `bulk`).
- A stored recipient list or template gives a Message whose recipients or
  content only SparkPost knows; it is exclusive, so only a SparkPost vendor
  ever sees it, and that one is given the request as it came.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.utils import getaddresses
from functools import lru_cache
from typing import Any

import orjson

from mailmux.message import DEFAULT_TRAFFIC_CLASS, Address, InvalidMessage, Message, MessageLimits
from mailmux.mime import parse_mime
from mailmux.vendors.sparkpost.content import ContentReader

_DROPPED_TOP = frozenset({"description", "substitution_data"})  # the latter: see docstring
_DROPPED_OPTIONS = frozenset({"open_tracking", "click_tracking", "initial_open"})
_FLAG_OPTIONS = frozenset({"sandbox", "skip_suppression", "inline_css"})  # exclusive when on
_RECIPIENT_FIELDS = frozenset({"address", "tags", "metadata", "substitution_data"})
_ADDRESS_FIELDS = frozenset({"email", "name", "header_to"})


@dataclass(slots=True)
class _Recipient:
    raw: dict[str, Any]
    address: Address
    header_to: str | None
    tags: tuple[str, ...]
    metadata: dict[str, str]


@dataclass(slots=True)
class _Group:
    """The recipients of one Message: `to` first, then the copies that show it."""

    to: _Recipient
    copies: list[_Recipient] = field(default_factory=list)
    exclusive: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Read:
    """One Message of a transmission and the recipients it stands for (for narrowing)."""

    message: Message
    recipients: list[dict[str, Any]]
    exclusive: tuple[str, ...]


def read_transmission(
    doc: dict[str, Any], *, now: float, limits: MessageLimits
) -> tuple[list[Read], list[str]]:
    """The transmission's Messages (each with its recipients); InvalidMessage if refused.

    The second value names the fields of the whole request only SparkPost can carry.
    """
    return _Reader(limits, now).read(doc)


class _Reader(ContentReader):
    """The content (`ContentReader`), then options, recipients and their groups."""

    def read(self, doc: dict[str, Any]) -> tuple[list[Read], list[str]]:
        check = self.check
        traffic_class = self._options(doc.get("options"))
        substitutes = not (
            isinstance(doc.get("options"), dict)
            and doc["options"].get("perform_substitutions") is False
        )
        for key, value in doc.items():
            if value is not None and key not in _KNOWN_TOP:
                self.exclusive.add(key)
        base_metadata = self._metadata(doc.get("metadata"), "metadata")
        campaign = check.string(doc.get("campaign_id"), "campaign_id", header=True)
        recipients = self._recipients(doc.get("recipients"))
        content = doc.get("content")
        message = self.content(content)
        if recipients is not None:
            check.recipients(len(recipients))
        if substitutes and any("{{" in text for text in self.rendered):
            self.exclusive.add("substitutions")
        if check.errors or message is None:
            raise InvalidMessage(check.errors)
        message = replace(message, traffic_class=traffic_class)
        if recipients is None:  # a stored list: recipients only SparkPost knows
            extra = (campaign,) if campaign else ()
            tagged = replace(message, tags=extra, metadata=base_metadata)
            return [Read(tagged, [], ())], sorted(self.exclusive)
        reads: list[Read] = []
        if message.raw_mime is not None:
            raw = self._raw_read(
                message, _Group(recipients[0], recipients[1:]), base_metadata, campaign
            )
            reads = [] if raw is None else [raw]
        else:
            cc_shown = {a.email.lower() for a in message.cc}
            groups = _groups(recipients)
            delivered = {r.address.email.lower() for r in recipients}
            if cc_shown - delivered:
                self.exclusive.add("content.headers.CC")  # a CC nobody receives
            reads = [
                self._group_read(message, g, cc_shown, base_metadata, campaign) for g in groups
            ]
        if check.errors:
            raise InvalidMessage(check.errors)
        return reads, sorted(self.exclusive)

    # -- options and top-level fields ------------------------------------------------

    def _options(self, options: object) -> str:
        if options is None:
            return DEFAULT_TRAFFIC_CLASS
        if not isinstance(options, dict):
            self.check.wrong_type("options", options, "an object")
            return DEFAULT_TRAFFIC_CLASS
        traffic_class = DEFAULT_TRAFFIC_CLASS
        for key, value in options.items():
            path = f"options.{key}"
            if value is None or key in _DROPPED_OPTIONS:
                continue
            if key in ("transactional", "perform_substitutions"):
                if not isinstance(value, bool):
                    self.check.wrong_type(path, value, "a boolean")
                elif key == "transactional":
                    traffic_class = "transactional" if value else "bulk"
            elif key in _FLAG_OPTIONS:
                if value is not False:
                    self.exclusive.add(path)
            elif value != "":  # start_time, ip_pool and what mailmux does not know
                self.exclusive.add(path)
        return traffic_class

    def _metadata(self, value: object, path: str) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.check.wrong_type(path, value, "an object")
            return {}
        found: dict[str, str] = {}
        for key, item in value.items():
            text = item if isinstance(item, str) else orjson.dumps(item).decode()
            name = self.check.string(key, f"{path}.{key!r}", header=True)
            kept = self.check.string(text, f"{path}.{key}", header=True)
            if name is not None and kept is not None:
                found[name] = kept
        return found

    # -- recipients ------------------------------------------------------------------

    def _recipients(self, value: object) -> list[_Recipient] | None:
        """The inline recipients; None for a stored list (exclusive)."""
        check = self.check
        if isinstance(value, dict) and isinstance(value.get("list_id"), str) and value["list_id"]:
            self.exclusive.add("recipients.list_id")
            return None
        if value is None or value == [] or isinstance(value, dict):
            check.fail("recipients", "required", "recipients or list_id required")
            return []
        if not isinstance(value, list):
            check.fail(
                "recipients",
                "invalid_type",
                "Invalid recipients type - needs to be json_array or json_object",
            )
            return []
        found = (self._recipient(item, f"recipients[{i}]") for i, item in enumerate(value))
        return [r for r in found if r is not None]

    def _recipient(self, item: object, path: str) -> _Recipient | None:
        check = self.check
        if not isinstance(item, dict):
            check.wrong_type(path, item, "a recipient object")
            return None
        for key, value in item.items():
            if value is not None and key not in _RECIPIENT_FIELDS:
                self.exclusive.add(f"recipients.{key}")
        raw_address = item.get("address")
        header_to = None
        if isinstance(raw_address, str):
            address = check.mailbox(raw_address, f"{path}.address")
        elif isinstance(raw_address, dict) and raw_address.get("email") is not None:
            for key, value in raw_address.items():
                if value is not None and key not in _ADDRESS_FIELDS:
                    self.exclusive.add(f"recipients.address.{key}")
            address = self.address(raw_address, f"{path}.address")
            header_to = check.string(
                raw_address.get("header_to"), f"{path}.address.header_to", header=True
            )
        else:
            check.fail(
                f"{path}.address", "required", "address.email is required for each recipient"
            )
            return None
        tags = self._tags(item.get("tags"), f"{path}.tags")
        metadata = self._metadata(item.get("metadata"), f"{path}.metadata")
        if address is None:
            return None
        self.rendered += [address.name or "", header_to or ""]
        return _Recipient(item, address, header_to or None, tags, metadata)

    def _tags(self, value: object, path: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.check.wrong_type(path, value, "an array of strings")
            return ()
        found = (
            self.check.string(t, f"{path}[{i}]", header=True, nullable=False)
            for i, t in enumerate(value)
        )
        return tuple(t for t in found if t is not None)

    # -- recipient groups → Messages -------------------------------------------------

    def _group_read(
        self,
        content: Message,
        group: _Group,
        cc_shown: set[str],
        metadata: Mapping[str, str],
        campaign: str | None,
    ) -> Read:
        first = group.to
        exclusive = set(group.exclusive)
        for copy in group.copies:
            if (copy.tags, copy.metadata) != (first.tags, first.metadata):
                exclusive.add("recipients.tags/metadata")  # differ within one email
        cc = tuple(c.address for c in group.copies if c.address.email.lower() in cc_shown)
        bcc = tuple(c.address for c in group.copies if c.address.email.lower() not in cc_shown)
        message = replace(
            content,
            to=(first.address,),
            cc=cc,
            bcc=bcc,
            tags=_tags(first.tags, campaign),
            metadata={**metadata, **first.metadata},
        )
        return Read(message, [first.raw, *(c.raw for c in group.copies)], tuple(sorted(exclusive)))

    def _raw_read(
        self, content: Message, group: _Group, metadata: Mapping[str, str], campaign: str | None
    ) -> Read | None:
        """Raw MIME goes to every recipient as it is: one Message, the recipients its envelope."""
        everyone = [group.to, *group.copies]
        envelope = [r.address.email for r in everyone]
        try:
            message = parse_mime(
                content.raw_mime or b"",
                envelope_to=envelope,
                limits=self.check.limits,
                now=self.now,
            )
        except InvalidMessage as err:
            for problem in err.errors:
                path = "content.email_rfc822" + (f".{problem.path}" if problem.path else "")
                self.check.fail(path, problem.code, problem.message)
            return None
        exclusive = set()
        if any((r.tags, r.metadata) != (group.to.tags, group.to.metadata) for r in everyone):
            exclusive.add("recipients.tags/metadata")
        message = replace(
            message,
            traffic_class=content.traffic_class,
            tags=_tags(group.to.tags, campaign),
            metadata={**metadata, **group.to.metadata},
        )
        return Read(message, [r.raw for r in everyone], tuple(sorted(exclusive)))


_KNOWN_TOP = (
    frozenset({"recipients", "content", "options", "metadata", "campaign_id"}) | _DROPPED_TOP
)


def _groups(recipients: Sequence[_Recipient]) -> list[_Group]:
    """Recipients → one group per To recipient, its cc/bcc copies joined to it."""
    groups: list[_Group] = []
    by_email: dict[str, _Group] = {}
    for recipient in recipients:
        if recipient.header_to is None:
            group = _Group(recipient)
            groups.append(group)
            by_email.setdefault(recipient.address.email.lower(), group)
    for recipient in recipients:
        if recipient.header_to is None:
            continue
        shown = _shown_emails(recipient.header_to)
        owner = by_email.get(shown[0]) if len(shown) == 1 else None
        if owner is None:  # a To header naming someone else: only SparkPost writes it
            groups.append(_Group(recipient, exclusive={"recipients.address.header_to"}))
        else:
            owner.copies.append(recipient)
    return groups


@lru_cache(maxsize=1024)
def _shown_emails(header_to: str) -> tuple[str, ...]:
    """The addresses a `header_to` shows, lower-cased. Cached: a transmission usually
    gives every copy the same one, and parsing it dominates reading a request."""
    return tuple(addr.lower() for _, addr in getaddresses([header_to]) if addr)


def _tags(tags: tuple[str, ...], campaign: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*tags, *((campaign,) if campaign else ()))))
