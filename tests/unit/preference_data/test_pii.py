"""PII scrubbing: what is replaced, what is left alone, and records scrubbed field by field."""

from collections import Counter

import pytest

from preference_data.pii import luhn_valid, scrub, scrub_record
from preference_data.records import PairwiseRecord, RankedRecord, SFTRecord, message


@pytest.mark.parametrize(
    "text, expected, label",
    [
        ("write to jane.doe+rlhf@mail.example.co.uk today", "write to [EMAIL] today", "EMAIL"),
        ("Contact: bob_99@example.org.", "Contact: [EMAIL].", "EMAIL"),
        # 4111 1111 1111 1111 is the standard Luhn-valid Visa test number.
        ("card 4111 1111 1111 1111 thanks", "card [CREDIT_CARD] thanks", "CREDIT_CARD"),
        ("card 4111-1111-1111-1111.", "card [CREDIT_CARD].", "CREDIT_CARD"),
        ("card 4111111111111111", "card [CREDIT_CARD]", "CREDIT_CARD"),
        ("amex 3782 822463 10005", "amex [CREDIT_CARD]", "CREDIT_CARD"),
        ("paid in 2024 4111 1111 1111 1111", "paid in 2024 [CREDIT_CARD]", "CREDIT_CARD"),
        ("server 192.168.0.1 is down", "server [IP_ADDRESS] is down", "IP_ADDRESS"),
        ("gateway 10.0.0.255.", "gateway [IP_ADDRESS].", "IP_ADDRESS"),
        ("v6 2001:db8:85a3::8a2e:370:7334 up", "v6 [IP_ADDRESS] up", "IP_ADDRESS"),
        ("loopback ::1 and fe80::1", "loopback [IP_ADDRESS] and [IP_ADDRESS]", "IP_ADDRESS"),
        ("mapped ::ffff:192.0.2.1", "mapped [IP_ADDRESS]", "IP_ADDRESS"),
        ("call +1 (555) 123-4567 now", "call [PHONE] now", "PHONE"),
        ("call +44 20 7946 0958", "call [PHONE]", "PHONE"),
        ("appelez +33 6 12 34 56 78", "appelez [PHONE]", "PHONE"),
        ("ruf +49 30 12345678 an", "ruf [PHONE] an", "PHONE"),
        ("(555) 123-4567", "[PHONE]", "PHONE"),
        ("555-123-4567 or 555.123.4567", "[PHONE] or [PHONE]", "PHONE"),
        ("toll free 1-800-555-0199", "toll free [PHONE]", "PHONE"),
        ("London 020 7946 0958", "London [PHONE]", "PHONE"),
        ("Berlin 030 12345678", "Berlin [PHONE]", "PHONE"),
        ("Paris 06 12 34 56 78", "Paris [PHONE]", "PHONE"),
    ],
)
def test_scrubbed(text, expected, label):
    scrubbed, counts = scrub(text)
    assert scrubbed == expected
    assert set(counts) == {label}
    assert counts[label] == expected.count(f"[{label}]")


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",
        "4111111111111112",
        "order 1234 5678 shipped",
        "the year 2024 and 1999",
        "between 1990-2024",
        "pi is 3.14159265358979 and e 2.718281828",
        "the price was $1,299.99 or 12,345,678.90",
        "ISBN 978-3-16-148410-0 and ISBN 0-306-40615-2",
        "ISBN 9783161484100",
        "on 01.02.2024 or 2024-01-15 or 01/02/2024",
        "999.1.1.1 is not an address, nor is 1.2.3.256",
        "meet at 10:30:45 in std::vector or abc::def",
        "a short number 12345 and 555-1234",
        "version 1.2.3 of the package",
        "not an email: user@localhost or @handle",
    ],
)
def test_left_alone(text):
    assert scrub(text) == (text, Counter())


def test_luhn():
    assert luhn_valid("4111111111111111")
    assert luhn_valid("378282246310005")
    assert luhn_valid("79927398713")  # the textbook example
    assert not luhn_valid("79927398710")
    assert not luhn_valid("4111111111111112")


def test_several_kinds_in_one_text_are_all_counted():
    text = "Mail a@b.io or c@d.io, card 5555 5555 5555 4444, from 8.8.8.8 call +1 555 123 4567."
    scrubbed, counts = scrub(text)
    assert scrubbed == ("Mail [EMAIL] or [EMAIL], card [CREDIT_CARD], from [IP_ADDRESS] call [PHONE].")
    assert counts == Counter(EMAIL=2, CREDIT_CARD=1, IP_ADDRESS=1, PHONE=1)


def test_scrub_record_covers_every_text_field_and_returns_a_copy():
    conversation = (message("system", "admin is root@example.com"), message("user", "ip 1.2.3.4?"))
    record = PairwiseRecord(
        prompt=conversation,
        chosen="call 555-123-4567",
        rejected="card 4111 1111 1111 1111",
        annotator="x@y.com",
        source="f",
        line=3,
    )
    scrubbed, counts = scrub_record(record)
    assert scrubbed.prompt == (message("system", "admin is [EMAIL]"), message("user", "ip [IP_ADDRESS]?"))
    assert (scrubbed.chosen, scrubbed.rejected) == ("call [PHONE]", "card [CREDIT_CARD]")
    assert (scrubbed.annotator, scrubbed.source, scrubbed.line) == ("x@y.com", "f", 3)
    assert counts == Counter(EMAIL=1, IP_ADDRESS=1, PHONE=1, CREDIT_CARD=1)
    assert record.chosen == "call 555-123-4567"  # the original is untouched

    ranked = RankedRecord(prompt="mail me: a@b.io", responses=("ok", "10.0.0.1"), ranks=(0, 1))
    out, counts = scrub_record(ranked)
    assert (out.prompt, out.responses, out.ranks) == ("mail me: [EMAIL]", ("ok", "[IP_ADDRESS]"), (0, 1))
    assert counts == Counter(EMAIL=1, IP_ADDRESS=1)

    sft = SFTRecord((message("user", "hi"), message("assistant", "reach me at +44 20 7946 0958")), "s", 1)
    out, counts = scrub_record(sft)
    assert out.completion == "reach me at [PHONE]" and counts == Counter(PHONE=1)
