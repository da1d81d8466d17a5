"""Channel identity (keys, names, links) and the inline-button codecs."""

from __future__ import annotations

import re

import pytest

from bot.callbacks import (
    MAX_BYTES,
    DigestOriginals,
    Feedback,
    Mute,
    SearchPage,
    SettingsChoice,
    SubscriptionChoice,
)
from bot.channels import (
    channel_key,
    channel_link,
    channel_name,
    chat_reference,
    is_private,
    is_username,
    normalise_channel,
    parse_post_link,
    permalink,
)

# -- channel names ----------------------------------------------------------------------------


@pytest.mark.parametrize(("typed", "key"), [
    ("@SomeName", "somename"),
    ("SomeName", "somename"),
    ("  @Some_Name_1  ", "some_name_1"),
    ("t.me/SomeName", "somename"),
    ("T.ME/SomeName", "somename"),
    ("https://t.me/SomeName", "somename"),
    ("http://t.me/SomeName/", "somename"),
    ("https://t.me/s/SomeName/12", "somename"),
    ("https://t.me/SomeName/12?single", "somename"),
    ("t.me/SomeName?embed=1", "somename"),
    ("https://telegram.me/SomeName", "somename"),
    ("www.t.me/SomeName", "somename"),
    ("telegram.dog/SomeName", "somename"),
    ("abcde", "abcde"),  # 5 characters: the shortest username
    ("a" + "b" * 31, "a" + "b" * 31),  # 32: the longest
])
def test_normalise_channel_accepts_what_users_paste(typed: str, key: str) -> None:
    assert normalise_channel(typed) == key


@pytest.mark.parametrize("typed", [
    "",
    "   ",
    "@",
    "@abc",  # 4 characters
    "a" * 33,  # 33 characters
    "@канал_новостей",  # not ASCII
    "@naïve_name",
    "@1channel",  # a digit first
    "@_channel",
    "@some-name",
    "@some name",
    "https://t.me/",
    "https://t.me/s/",
    "https://t.me/+AbCdEfGhIjK",  # an invite link
    "https://example.com/SomeName",
])
def test_normalise_channel_rejects_what_is_not_a_username(typed: str) -> None:
    with pytest.raises(ValueError):
        normalise_channel(typed)


def test_channel_name_does_not_judge_and_is_username_does() -> None:
    assert channel_name("@Ab") == "ab"
    assert not is_username("ab")
    assert is_username("some_name") and not is_username("Some_Name")  # keys are lower case


def test_channel_key_for_ids_and_usernames() -> None:
    assert channel_key(-1001234567890, None) == "c:1234567890"
    assert channel_key(-1001234567890, "SomeName") == "somename"
    assert channel_key(-1001234567890, "") == "c:1234567890"
    assert channel_key(-42, None) == "c:42"  # a basic group: no -100 prefix
    assert channel_key(777, None) == "c:777"
    assert is_private(channel_key(-1001, None)) and not is_private(channel_key(-1001, "somename"))


def test_permalink_for_public_and_private_keys() -> None:
    assert permalink("somename", 45) == "https://t.me/somename/45"
    assert permalink("c:1234567890", 45) == "https://t.me/c/1234567890/45"
    # a private channel's permalink parses back to the same key
    assert parse_post_link(permalink(channel_key(-1001234567890, None), 7)) == ("c:1234567890", 7)
    assert parse_post_link(permalink(channel_key(-1001234567890, "Some_Name"), 7)) == ("some_name", 7)


def test_channel_link_escapes_and_hides_private_channels() -> None:
    assert channel_link("somename") == '<a href="https://t.me/somename">@somename</a>'
    private = channel_link("c:123")
    assert "<a" not in private and "123" in private


@pytest.mark.parametrize(("ref", "parsed"), [
    ("t.me/name/45", ("name", 45)),
    ("https://t.me/Name/45", ("name", 45)),
    ("http://t.me/name/45/", ("name", 45)),
    ("t.me/s/name/45", ("name", 45)),
    ("https://t.me/s/Some_Name/45?before=50", ("some_name", 45)),
    ("https://www.t.me/name/45", ("name", 45)),
    ("https://telegram.me/name/45", ("name", 45)),
    ("telegram.dog/name/45", ("name", 45)),
    ("t.me/c/123/45", ("c:123", 45)),
    ("https://t.me/c/1234567890/45?thread=1", ("c:1234567890", 45)),
    ("  https://t.me/name/45  ", ("name", 45)),
])
def test_parse_post_link_reads_public_and_private_links(ref: str, parsed: tuple[str, int]) -> None:
    assert parse_post_link(ref) == parsed


@pytest.mark.parametrize("ref", [
    "",
    "garbage",
    "t.me/name",
    "t.me/name/",
    "t.me/name/abc",
    "t.me/name/45/extra",
    "t.me/c/abc/45",  # a private link needs a numeric id
    "https://example.com/name/45",
    "https://t.me.evil.com/name/45",
    "ftp://t.me/name/45",
    "@name/45",
])
def test_parse_post_link_rejects_garbage(ref: str) -> None:
    assert parse_post_link(ref) is None


def test_chat_reference() -> None:
    assert chat_reference(-1001234567890) == -1001234567890
    assert chat_reference("-1001234567890") == -1001234567890
    assert chat_reference(" 42 ") == 42
    assert chat_reference("@Some_Name") == "@some_name"
    assert chat_reference("Some_Name") == "@some_name"
    assert chat_reference("https://t.me/Some_Name") == "@some_name"


# -- callback codecs --------------------------------------------------------------------------

CASES = [
    (Feedback("ok", 12), "fb:ok:12"),
    (Feedback("no", 7), "fb:no:7"),
    (Mute(5), "mute:5"),
    (SearchPage("tok-en", 3), "s:tok-en:3"),
    (SearchPage("Ab_9-x", 0), "s:Ab_9-x:0"),
    (SubscriptionChoice("l", "pow"), "sub:l:pow"),
    (SubscriptionChoice("g", "uk"), "sub:g:uk"),
    (SubscriptionChoice("m", "0.7"), "sub:m:0.7"),
    (SubscriptionChoice("done"), "sub:done"),
    (SettingsChoice("q", "23:00-07:00"), "set:q:23:00-07:00"),
    (SettingsChoice("q", "off"), "set:q:off"),
    (SettingsChoice("d", "weekly"), "set:d:weekly"),
    (SettingsChoice("f", "toggle"), "set:f:toggle"),
    (DigestOriginals(1, 2), "dg:1:2"),
    (DigestOriginals(1772323200, 1772928000), "dg:1772323200:1772928000"),
]
Codec = Feedback | Mute | SearchPage | SubscriptionChoice | SettingsChoice | DigestOriginals
CODECS: list[type[Codec]] = [Feedback, Mute, SearchPage, SubscriptionChoice, SettingsChoice, DigestOriginals]


@pytest.mark.parametrize(("button", "data"), CASES, ids=[d for _, d in CASES])
def test_each_codec_encodes_the_known_format_and_decodes_it_back(button: Codec, data: str) -> None:
    assert button.encode() == data
    decoded = type(button).decode(data)
    assert decoded == button
    assert re.match(type(button).PATTERN, data)


@pytest.mark.parametrize(("button", "data"), CASES, ids=[d for _, d in CASES])
def test_no_other_codec_claims_a_codecs_data(button: Codec, data: str) -> None:
    for other in CODECS:
        if other is type(button):
            continue
        assert re.match(other.PATTERN, data) is None, other.__name__
        with pytest.raises(ValueError):
            other.decode(data)


def test_decoded_ids_are_ints() -> None:
    fb = Feedback.decode("fb:ok:12")
    assert fb.post_id == 12 and isinstance(fb.post_id, int) and fb.verdict == "ok"
    page = SearchPage.decode("s:tok-en:3")
    assert page.page == 3 and isinstance(page.page, int) and page.token == "tok-en"
    dg = DigestOriginals.decode("dg:1:2")
    assert (dg.since, dg.until) == (1, 2) and isinstance(dg.since, int)
    assert SubscriptionChoice.decode("sub:done") == SubscriptionChoice("done", "")


@pytest.mark.parametrize(("codec", "data"), [
    (Feedback, None),
    (Feedback, ""),
    (Feedback, "fb:maybe:12"),
    (Feedback, "fb:ok:"),
    (Feedback, "fb:ok:12x"),
    (Feedback, "fb:ok:-1"),
    (Feedback, "xfb:ok:12"),
    (Mute, "mute:"),
    (Mute, "mute:five"),
    (Mute, "mute:5:6"),
    (SearchPage, "s:tok en:1"),
    (SearchPage, "s:tok:en:1"),
    (SearchPage, "s::1"),
    (SearchPage, "s:tok:"),
    (SubscriptionChoice, "sub:x:pow"),
    (SubscriptionChoice, "sub:l:"),
    (SubscriptionChoice, "sub:l:po w"),
    (SubscriptionChoice, "sub:"),
    (SettingsChoice, "set:z:1"),
    (SettingsChoice, "set:q:"),
    (SettingsChoice, "set:q"),
    (DigestOriginals, "dg:a:b"),
    (DigestOriginals, "dg:1"),
    (DigestOriginals, "dg:1:2:3"),
    (DigestOriginals, "DG:1:2"),
])
def test_decode_rejects_foreign_data(codec: type[Codec], data: str | None) -> None:
    with pytest.raises(ValueError, match=codec.__name__):
        codec.decode(data)


def test_encode_refuses_more_than_64_bytes() -> None:
    at_limit = SearchPage("t" * (MAX_BYTES - len("s::1")), 1)
    assert len(at_limit.encode().encode()) == MAX_BYTES
    with pytest.raises(ValueError, match="64 bytes"):
        SearchPage("t" * (MAX_BYTES - len("s::1") + 1), 1).encode()


def test_the_limit_counts_bytes_not_characters() -> None:
    value = "я" * 30  # 30 characters, 60 bytes in UTF-8
    assert len(f"set:d:{value}") < MAX_BYTES
    with pytest.raises(ValueError):
        SettingsChoice("d", value).encode()
    short = SettingsChoice("d", "я" * 29)  # 6 + 58 = 64 bytes
    assert SettingsChoice.decode(short.encode()) == short


def test_a_digest_button_for_a_period_before_1970_decodes() -> None:
    button = DigestOriginals(-31536000, 1772323200)  # /digest 1969-01-01..2026-03-01
    assert DigestOriginals.decode(button.encode()) == button
