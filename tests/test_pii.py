"""PII redaction: true positives with exact output, false positives left untouched, order, counts, properties.
All values are publicly documented test data (Visa/Mastercard test cards, ECBS example IBANs,
RFC 5737 / RFC 3849 documentation addresses, 555-01xx fictional phone numbers)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.pii import PII_TYPES, Redaction, Redactor, redact_messages

R = Redactor()


def redacted(text: str) -> str:
    return R.redact(text)[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # EMAIL
        ("mail me at jane.doe@example.com.", "mail me at <EMAIL>."),
        ("john+newsletter@mail.example.co.uk", "<EMAIL>"),
        ("(support_team-1@sub.example.org)", "(<EMAIL>)"),
        ("Contact: A.B@Example.COM, thanks", "Contact: <EMAIL>, thanks"),
        # PHONE
        ("call +44 20 7946 0958 today", "call <PHONE> today"),
        ("+1-202-555-0143", "<PHONE>"),
        ("Tel. 0049 30 1234567", "Tel. <PHONE>"),
        ("(202) 555-0143 or 020 7946 0958", "<PHONE> or <PHONE>"),
        ("+1 (202) 555-0187.", "<PHONE>."),
        ("202.555.0143", "<PHONE>"),
        ("+12025550143", "<PHONE>"),
        ("ring 555-0100 after 6", "ring <PHONE> after 6"),
        # CARD
        ("card 4111 1111 1111 1111 exp 12/27", "card <CARD> exp 12/27"),
        ("4111-1111-1111-1111", "<CARD>"),
        ("pay with 5555555555554444!", "pay with <CARD>!"),
        ("amex 3782 822463 10005", "amex <CARD>"),
        ("4012888888881881,", "<CARD>,"),
        # IBAN
        ("IBAN: GB82 WEST 1234 5698 7654 32", "IBAN: <IBAN>"),
        ("DE89 3704 0044 0532 0130 00.", "<IBAN>."),
        ("to DE89370400440532013000 please", "to <IBAN> please"),
        ("gb82west12345698765432", "<IBAN>"),
        ("BE68 5390 0754 7034 2024", "<IBAN> 2024"),  # a trailing year is not swallowed
        # IP
        ("from 192.0.2.1 and 203.0.113.254:8080", "from <IP> and <IP>:8080"),
        ("host 198.51.100.7.", "host <IP>."),
        ("2001:db8::1", "<IP>"),
        ("[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:443", "[<IP>]:443"),
        ("mapped ::ffff:192.0.2.128 ok", "mapped <IP> ok"),
        ("net 2001:db8:: /32", "net <IP> /32"),
    ],
)
def test_true_positives(text: str, expected: str) -> None:
    assert redacted(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        # EMAIL look-alikes
        "ping @mention in the channel",
        "@dataclass(frozen=True)\nclass A: ...",
        "y = a@b",
        "ssh user@localhost",
        "name@domain.c",
        # dates, times, years, prices, order numbers, versions
        "on 2022-03-15 at 18:35",
        "on 15/03/2022 or 15.03.2022 or 03-15-2022",
        "2022-03-15T18:35:00Z",
        "from 1990-2022, in 2023",
        "it costs $1,299.00 (1 299,00 EUR)",
        "we have 1 000 000 users and 12.500.000 views",
        "total 1234567.89",
        "order #123456 and order 123456",
        "order #12345678",
        "version 1.2.3, v10.0.19041.1234, 10.0.19041.1234",
        # cards and IBANs failing their checks
        "4111 1111 1111 1112",
        "1234 5678 9012 3456",
        "1234567890123456",
        "GB83 WEST 1234 5698 7654 32",
        "DE88 3704 0044 0532 0130 00",
        # IPs
        "999.1.1.1 and 256.0.0.1",
        "meet at 10:30 or 10:30:45",
        "localhost ::1 and std::vector",
        "hash 1.2.3",
    ],
)
def test_false_positives_untouched(text: str) -> None:
    assert R.redact(text) == (text, Counter())


def test_counts_and_mixed_types() -> None:
    text = (
        "Hi, I'm jane@example.com, phone +1-202-555-0143 or (202) 555-0187, card 4111 1111 1111 1111, "
        "IBAN DE89 3704 0044 0532 0130 00, my IP 203.0.113.9 / 2001:db8::7, EMP-123456."
    )
    out, counts = Redactor(extra_patterns={"EMPLOYEE_ID": r"EMP-\d{6}"}).redact(text)
    assert out == (
        "Hi, I'm <EMAIL>, phone <PHONE> or <PHONE>, card <CARD>, "
        "IBAN <IBAN>, my IP <IP> / <IP>, <EMPLOYEE_ID>."
    )
    assert counts == Counter(EMAIL=1, PHONE=2, CARD=1, IBAN=1, IP=2, EMPLOYEE_ID=1)


def test_digits_of_one_value_are_not_redacted_twice() -> None:
    assert redacted("5550143@example.com") == "<EMAIL>"
    assert redacted("GB83 WEST 1234 5698 7654 32") == "GB83 WEST 1234 5698 7654 32"  # no PHONE inside
    assert redacted("4111 1111 1111 1111 5550143") == "<CARD> <PHONE>"
    assert redacted("198.51.100.123") == "<IP>"  # not a dotted PHONE
    assert R.find("tel 555-0143") == [Redaction(4, 12, "PHONE")]


def test_unicode_and_empty() -> None:
    text = "Привет! Пишите: иван@example.com 📧, звоните +7 495 123-45-67 — спасибо ✓ café"
    assert redacted(text) == "Привет! Пишите: <EMAIL> 📧, звоните <PHONE> — спасибо ✓ café"
    assert redacted("日本語 192.0.2.44 テスト") == "日本語 <IP> テスト"
    assert R.redact("") == ("", Counter())


def test_type_selection_and_extra_patterns() -> None:
    only_email = Redactor(types=["EMAIL"])
    assert only_email.redact("a@example.com +1-202-555-0143") == ("<EMAIL> +1-202-555-0143", Counter(EMAIL=1))
    extra = Redactor(extra_patterns={"EMPLOYEE_ID": r"EMP-\d{6}", "TICKET": r"TCK\d+"})
    assert extra.redact("EMP-000042 and TCK7 and TCK9") == (
        "<EMPLOYEE_ID> and <TICKET> and <TICKET>",
        Counter(EMPLOYEE_ID=1, TICKET=2),
    )
    assert Redactor(extra_patterns={"X": r"z*"}).redact("abc") == ("abc", Counter())  # empty matches ignored
    assert Redactor(extra_patterns={"WORD": r"[A-Z]+"}).redact("<EMAIL> ok") == ("<EMAIL> ok", Counter())


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError, match="EMPLOYEE_ID"):
        Redactor(extra_patterns={"EMPLOYEE_ID": r"EMP-(\d{6}"})
    with pytest.raises(ValueError, match="SSN"):
        Redactor(types=["EMAIL", "SSN"])
    with pytest.raises(ValueError, match="bad name"):
        Redactor(extra_patterns={"bad name": r"x"})


def test_redact_messages() -> None:
    messages = [
        {"role": "user", "content": "I'm jane@example.com", "name": "jane"},
        {"role": "assistant", "content": "Noted, call 555-0143?"},
        {"role": "user", "content": [{"type": "image"}]},
    ]
    out, counts = redact_messages(R, messages)
    assert out == [
        {"role": "user", "content": "I'm <EMAIL>", "name": "jane"},
        {"role": "assistant", "content": "Noted, call <PHONE>?"},
        {"role": "user", "content": [{"type": "image"}]},
    ]
    assert counts == Counter(EMAIL=1, PHONE=1)
    assert messages[0]["content"] == "I'm jane@example.com"  # inputs untouched
    assert all(a is not b for a, b in zip(out, messages))


SAMPLES = [
    "jane.doe@example.com", "+44 20 7946 0958", "(202) 555-0143", "4111 1111 1111 1111", "4111 1111 1111 1112",
    "GB82 WEST 1234 5698 7654 32", "GB83 WEST 1234 5698 7654 32", "192.0.2.1", "999.1.1.1", "2001:db8::1",
    "2022-03-15", "10:30", "1.2.3", "$1,299.00", "#123456", "@dataclass", "<EMAIL>", "EMP-123456", "::1",
]
FRAGMENTS = st.one_of(
    st.sampled_from(SAMPLES),
    st.text(alphabet="0123456789 .-:+()@#/,<>abcEMPWéß", max_size=8),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAGMENTS, max_size=8), st.sampled_from(["", " ", "-", ".", ":", "\n"]))
def test_redaction_is_idempotent(parts: list[str], sep: str) -> None:
    redactor = Redactor(extra_patterns={"EMPLOYEE_ID": r"EMP-\d{6}"})
    once, _ = redactor.redact(sep.join(parts))
    assert redactor.redact(once) == (once, Counter())


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Nd",), blacklist_characters="@0123456789")))
def test_text_without_digits_or_at_is_unchanged(text: str) -> None:
    assert R.redact(text) == (text, Counter())


def test_all_types_listed() -> None:
    assert set(PII_TYPES) == {"EMAIL", "PHONE", "CARD", "IBAN", "IP"}
