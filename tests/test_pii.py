"""Personal data: validation, masking, encryption, blind indexes, the key file."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from bnplctl import crypto, pii
from bnplctl.errors import ConfigError, InvalidInput
from bnplctl.schemas import UserCreate

pytestmark = pytest.mark.usefixtures("no_database")

KEY = bytes(range(32))


def test_phone_is_normalised_to_e164() -> None:
    assert pii.normalize_phone("+998 90 123-45-67") == "+998901234567"
    assert pii.normalize_phone("+1 (202) 555-0143") == "+12025550143"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("998901234567", "international format"),
        ("+99890", "not a valid number"),
        ("+abc", "only the digits 0-9 after the +"),
        ("+998901112233x", "only the digits 0-9 after the +"),  # an extension
        ("+٩٩٨٩٠١١١٢٢٣٣", "only the digits 0-9 after the +"),  # Arabic-Indic digits
        ("+99912345678", "not a phone number"),  # 999 is no calling code
    ],
)
def test_bad_phone_is_refused(raw: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason) as caught:
        pii.normalize_phone(raw)
    assert caught.value.message.startswith("phone: ")


def test_card_needs_12_to_19_digits_and_luhn() -> None:
    assert pii.normalize_card("4111 1111 1111 1111") == "4111111111111111"
    assert pii.normalize_card("3782-822463-10005") == "378282246310005"
    with pytest.raises(InvalidInput, match="Luhn"):
        pii.normalize_card("4111111111111112")
    with pytest.raises(InvalidInput, match="12 to 19 digits"):
        pii.normalize_card("42")
    with pytest.raises(InvalidInput, match="digits only"):
        pii.normalize_card("4111x11111111111")


@pytest.mark.parametrize(
    ("card", "brand"),
    [
        ("4111111111111111", "visa"),
        ("5555555555554444", "mastercard"),
        ("2223000048400011", "mastercard"),
        ("378282246310005", "amex"),
        ("6011111111111117", "discover"),
        ("3530111333300000", "jcb"),
        ("8600123412341234", "uzcard"),
        ("9860123412341234", "humo"),
    ],
)
def test_card_brand(card: str, brand: str) -> None:
    assert pii.card_brand(card) == brand


def test_passport_format() -> None:
    assert pii.normalize_passport(" aa1234567 ") == "AA1234567"
    for bad in ("AA12", "1234567AA", "AA12345B7", "ÄA1234567", "A" * 10 + "1" * 11):
        with pytest.raises(InvalidInput, match="passport: "):
            pii.normalize_passport(bad)


def test_age_must_be_at_least_18() -> None:
    today = date(2026, 11, 27)
    assert pii.check_adult(date(2008, 11, 27), today) == date(2008, 11, 27)
    with pytest.raises(InvalidInput, match="at least 18"):
        pii.check_adult(date(2008, 11, 28), today)
    with pytest.raises(InvalidInput, match="future"):
        pii.check_adult(date(2027, 1, 1), today)
    with pytest.raises(InvalidInput, match="1900"):
        pii.check_adult(date(1899, 12, 31), today)


def test_masks_match_the_contract() -> None:
    assert pii.mask_phone("+998901234567") == "+998****4567"
    assert pii.mask_phone("+12025550143") == "+1****0143"
    assert pii.mask_card("411111", "1111") == "4111 **** **** 1111"
    assert pii.mask_passport("AA1234567") == "AA*******"


@given(st.text(max_size=40))
def test_passport_mask_never_reveals_the_number(raw: str) -> None:
    masked = pii.mask_passport(raw)
    assert len(masked) == len(raw)
    digits = "".join(ch for ch in raw if ch.isdigit())
    if digits:
        assert digits not in masked


@given(st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True))
def test_phone_mask_never_reveals_the_number(phone: str) -> None:
    masked = pii.mask_phone(phone)
    assert phone not in masked
    assert phone[1:] not in masked
    assert masked.endswith(phone[-4:]) or masked.endswith("****")


@given(st.from_regex(r"[0-9]{12,19}", fullmatch=True))
def test_card_mask_shows_at_most_first4_and_last4(card: str) -> None:
    masked = pii.mask_card(card[:6], card[-4:])
    assert card not in masked.replace(" ", "")
    assert sum(ch.isdigit() for ch in masked) == 8


def _digit_heavy(value: object) -> bool:
    """At least 6 digits: no error message has that many, so it cannot hold the value
    by coincidence (a word like "must" can)."""
    return isinstance(value, str) and sum(ch.isdigit() for ch in value) >= 6


@given(st.one_of(st.text(max_size=30), st.from_regex(r"[+ A-Z]{0,3}[0-9 -]{6,22}", fullmatch=True)))
def test_validators_raise_only_invalid_input_and_never_echo_the_value(raw: str) -> None:
    for validate in (pii.normalize_phone, pii.normalize_card, pii.normalize_passport):
        try:
            validate(raw)
        except InvalidInput as exc:
            if _digit_heavy(raw.strip()):
                assert raw.strip() not in exc.message


@given(
    st.dictionaries(
        st.sampled_from(["user_id", "name", "phone", "passport", "card", "dob"]),
        st.one_of(st.text(max_size=25), st.integers(), st.none(), st.booleans()),
    )
)
def test_user_rows_fail_only_with_invalid_input(fields: dict[str, object]) -> None:
    try:
        UserCreate.parse(fields, TODAY)
    except InvalidInput as exc:
        assert ": " in exc.message
        for value in fields.values():
            if _digit_heavy(value):
                assert str(value).strip() not in exc.message


def test_user_model_repr_hides_the_sensitive_fields() -> None:
    user = UserCreate.parse(
        {
            "name": "John",
            "phone": "+998901234567",
            "passport": "AA1234567",
            "card": "4111111111111111",
            "dob": "1990-05-20",
        },
        TODAY,
    )
    shown = repr(user) + str(user)
    for secret in ("901234567", "AA1234567", "4111111111111111"):
        assert secret not in shown


def test_passport_encryption_round_trip_is_bound_to_the_user() -> None:
    keyring = crypto.Keyring(KEY)
    sealed = keyring.encrypt_passport("AA1234567", "usr-001")
    assert b"AA1234567" not in sealed
    assert sealed != keyring.encrypt_passport("AA1234567", "usr-001")  # random nonce
    assert keyring.decrypt_passport(sealed, "usr-001") == "AA1234567"
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        keyring.decrypt_passport(sealed, "usr-002")
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        crypto.Keyring(bytes(32)).decrypt_passport(sealed, "usr-001")
    with pytest.raises(ConfigError, match="unknown format"):
        keyring.decrypt_passport(b"\x09" + sealed[1:], "usr-001")


def test_blind_index_and_card_fingerprint_are_keyed_and_stable() -> None:
    keyring, other = crypto.Keyring(KEY), crypto.Keyring(bytes(32))
    assert keyring.passport_index("AA1234567") == keyring.passport_index("AA1234567")
    assert keyring.passport_index("AA1234567") != other.passport_index("AA1234567")
    assert keyring.passport_index("AA1234567") != keyring.passport_index("AA1234568")
    fingerprint = keyring.card_fingerprint("4111111111111111")
    assert fingerprint == keyring.card_fingerprint("4111111111111111")
    assert fingerprint != other.card_fingerprint("4111111111111111")
    assert "4111111111111111" not in fingerprint
    assert pii.mask_card("411111", "1111") == "4111 **** **** 1111"
    with pytest.raises(ConfigError):
        crypto.Keyring(b"short")


def test_the_keyed_digests_are_plain_hmac_sha256_of_derived_keys() -> None:
    """Stored blind indexes and fingerprints stay valid whatever computes them."""
    import hashlib
    import hmac

    def expected(label: bytes, value: str) -> str:
        derived = hmac.digest(KEY, label, hashlib.sha256)
        return hmac.new(derived, value.encode(), hashlib.sha256).hexdigest()

    keyring = crypto.Keyring(KEY)
    for _ in range(2):  # each digest starts afresh from the keyed state
        assert keyring.passport_index("AA1234567") == expected(
            b"bnplctl/passport-blind-index/v1", "AA1234567"
        )
        assert keyring.card_fingerprint("4111111111111111") == expected(
            b"bnplctl/card-fingerprint/v1", "4111111111111111"
        )


def test_key_file_is_generated_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "secret.key"
    assert crypto.read_key(path) is None
    first = crypto.create_key(path)

    assert len(first) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert crypto.read_key(path) == first
    assert crypto.create_key(path) == first  # another process's key, already there, wins
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]


@pytest.mark.parametrize("content", ["not hex", "abcd"])
def test_bad_key_file_is_a_configuration_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "secret.key"
    path.write_text(content)
    with pytest.raises(ConfigError, match="must hold 32 bytes"):
        crypto.read_key(path)


def test_unreadable_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a regular file"):
        crypto.read_key(tmp_path)  # a directory


@given(st.from_regex(r"[0-9]{1,25}", fullmatch=True))
def test_luhn_matches_the_reference_implementation(digits: str) -> None:
    from stdnum import luhn

    assert pii.luhn_valid(digits) == luhn.is_valid(digits)


def _library_says(raw: str) -> str | None:
    """The reference: phonenumbers' own parse, validity check and E.164 formatting,
    within the 7 to 15 digits the users table stores."""
    import phonenumbers

    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    e164 = str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
    return e164 if 7 <= len(e164) - 1 <= 15 else None


def test_every_valid_example_number_of_every_type_is_stored_or_refused_by_length() -> None:
    import phonenumbers

    kinds = phonenumbers.PhoneNumberType.values()
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in kinds:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is None:
                continue
            raw = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            assert _ours(raw) == _library_says(raw), (region, kind, raw)
    with pytest.raises(InvalidInput, match="phone: must have 7 to 15 digits"):
        pii.normalize_phone("+98 9601")  # a valid Iranian UAN, too short to store


def _ours(raw: str) -> str | None:
    try:
        return pii.normalize_phone(raw)
    except InvalidInput:
        return None


def _example_numbers() -> list[str]:
    import phonenumbers

    examples = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                examples.append(
                    phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                )
    return examples


EXAMPLES = _example_numbers()


def test_every_regions_example_numbers_are_valid_as_the_library_says() -> None:
    assert len(EXAMPLES) > 300
    assert [_ours(raw) for raw in EXAMPLES] == [_library_says(raw) for raw in EXAMPLES]


@given(
    st.sampled_from(EXAMPLES),
    st.integers(min_value=0, max_value=4),
    st.text(alphabet="0123456789", max_size=4),
)
def test_the_fast_phone_check_agrees_with_the_library(example: str, cut: int, tail: str) -> None:
    # Valid examples with their last digits replaced or extended: near misses of every
    # length around the valid ones, in every region.
    raw = example[: len(example) - cut] + tail
    assert _ours(raw) == _library_says(raw)


# --- the batch fast path of user validation ----------------------------------------------

TODAY = date(2026, 11, 27)
_EDGES = st.sampled_from(["", " ", "\t", "  \t", "\n", "\r\n", "\x1c", "\xa0", "\u3000", "\x0b"])


def _around(core: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda left, middle, right: left + middle + right, _EDGES, core, _EDGES)


def _luhn_completed(stem: str) -> str:
    from stdnum import luhn

    return stem + luhn.calc_check_digit(stem)


_VALID_VALUES = {
    "name": st.text(min_size=1, max_size=200).filter(lambda name: name == name.strip()),
    "phone": st.sampled_from(EXAMPLES),
    "passport": st.from_regex(r"[A-Za-z]{1,3} ?[0-9]{4,16}", fullmatch=True),
    "card": st.from_regex(r"[0-9]{11,18}", fullmatch=True).map(_luhn_completed),
    "dob": st.dates(min_value=date(1900, 1, 1), max_value=date(2008, 1, 1)).map(str),
    "user_id": st.one_of(st.none(), st.just(""), st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}")),
}
# Near misses of every kind: unusual ends, wrong types, wrong lengths, bad values.
_ODD_VALUES = {
    "name": st.one_of(_around(st.text(max_size=205)), st.integers()),
    "phone": st.one_of(
        _around(st.sampled_from(EXAMPLES)),
        _around(st.from_regex(r"\+?[0-9 ()-]{6,18}", fullmatch=True)),
        st.integers(min_value=0),
    ),
    "passport": st.one_of(_around(st.text(max_size=22)), st.integers()),
    "card": st.one_of(
        _around(st.from_regex(r"[0-9 -]{10,22}", fullmatch=True)), st.integers(min_value=0)
    ),
    "dob": st.one_of(
        _around(st.dates(min_value=date(1890, 1, 1)).map(str)),
        st.sampled_from(["1970-1-1", "19700101", "", "yesterday"]),
        st.dates(),
    ),
    "user_id": st.one_of(
        st.integers(), _around(st.from_regex(r"[A-Za-z0-9._ -]{1,66}", fullmatch=True))
    ),
}


@st.composite
def _user_rows(draw: st.DrawFn) -> dict[str, object]:
    """A valid row with up to two fields made odd, or missing."""
    row: dict[str, object] = {name: draw(values) for name, values in _VALID_VALUES.items()}
    for name in draw(st.lists(st.sampled_from(sorted(_ODD_VALUES)), max_size=2)):
        if draw(st.booleans()):
            row[name] = draw(_ODD_VALUES[name])
        else:
            row.pop(name, None)
    return row


_USER_ROWS = _user_rows()


@settings(max_examples=500)
@given(_USER_ROWS)
def test_the_batch_fast_path_agrees_with_the_model(fields: dict[str, object]) -> None:
    """Every row the fast path takes, it takes as the model does. That it takes the rows
    it must is the next test's."""
    from bnplctl.validators import quick_user

    _agrees(quick_user, fields)


def _agrees(quick_user: Callable[..., object], fields: dict[str, object]) -> None:
    quick = quick_user(fields, TODAY)
    if quick is None:
        return  # not plainly valid: the batch takes UserCreate.parse
    user = UserCreate.parse(fields, TODAY)
    assert quick == (user.user_id, user.name, user.phone, user.passport, user.card, user.dob)


def _plain(core: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``core`` with the ends the fast path strips as the model does (spaces, tabs)."""
    ends = st.sampled_from(["", " ", "\t", " \t "])
    return st.builds(lambda left, middle, right: left + middle + right, ends, core, ends)


def _grouped(digits: str) -> str:
    return " ".join(digits[start : start + 4] for start in range(0, len(digits), 4))


def _plain_phones() -> list[str]:
    """The valid examples, in E.164 and as people write them (``+998 90 123 45 67``)."""
    import phonenumbers

    written = set()
    for raw in EXAMPLES:
        number = phonenumbers.parse(raw, None)
        written |= {
            raw,
            phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
        }
    return sorted(phone for phone in written if _ours(phone) is not None)


_PLAIN_PHONES = _plain_phones()
# Words of letters of any script, with the apostrophes and hyphens names have.
_NAME_WORDS = st.text(
    st.one_of(st.characters(categories=("Lu", "Ll", "Lo")), st.sampled_from("'-")),
    min_size=1,
    max_size=12,
)
# Plainly valid rows: text fields, valid values, ordinary ends. The fast path must take
# every one, with the model's values.
_PLAIN_USER_ROWS = st.fixed_dictionaries(
    {
        "name": _plain(st.lists(_NAME_WORDS, min_size=1, max_size=4).map(" ".join)),
        "phone": _plain(st.sampled_from(_PLAIN_PHONES)),
        "passport": _plain(st.from_regex(r"[A-Za-z]{1,3} ?[0-9]{5,16}", fullmatch=True)),
        "card": _plain(
            st.from_regex(r"[0-9]{11,18}", fullmatch=True)
            .map(_luhn_completed)
            .flatmap(lambda digits: st.sampled_from([digits, _grouped(digits)]))
        ),
        "dob": _plain(st.dates(min_value=date(1900, 1, 1), max_value=date(2008, 1, 1)).map(str)),
    },
    optional={
        "user_id": st.one_of(
            st.none(),
            st.just(""),
            _plain(st.from_regex(r"[a-z]{1,8}(-[0-9]{1,3})?", fullmatch=True)),
        )
    },
)


def _check_takes_plain_row(quick_user: Callable[..., object], fields: dict[str, object]) -> None:
    user = UserCreate.parse(fields, TODAY)  # a plain row is valid
    quick = quick_user(fields, TODAY)
    assert quick is not None, "the fast path declined a plainly valid row"
    assert quick == (user.user_id, user.name, user.phone, user.passport, user.card, user.dob)


# Each kind of plain row, whatever hypothesis draws.
_PINNED_PLAIN_ROWS: list[dict[str, object]] = [
    {
        "name": "José O'Brien",
        "phone": "+998901234567",
        "passport": "AB1234567",
        "card": "4111111111111111",
        "dob": "1990-05-17",
    },
    {
        "user_id": " usr-001 ",
        "name": "\tАнна Петрова-Иванова ",
        "phone": " +998 90 123 45 67",
        "passport": "ab 1234567\t",
        "card": "4111 1111 1111 1111",
        "dob": " 1990-05-17\t",
    },
    {
        "user_id": None,
        "name": "李雷",
        "phone": "+998901234567",
        "passport": "X12345",
        "card": "5500005555555559",
        "dob": "2008-01-01",
    },
]


def _pinned(test: Callable[..., None]) -> Callable[..., None]:
    for fields in _PINNED_PLAIN_ROWS:
        test = example(fields)(test)
    return test


@_pinned
@settings(max_examples=300)
@given(_PLAIN_USER_ROWS)
def test_the_batch_fast_path_takes_every_plainly_valid_row(fields: dict[str, object]) -> None:
    from bnplctl.validators import quick_user

    _check_takes_plain_row(quick_user, fields)


# A broken subject only has to fail: no shrinking of the example.
_NO_SHRINKING = (Phase.explicit, Phase.generate)


def _declines_all(fields: dict[str, object], today: date) -> object:
    return None


def _declines_names_beyond_ascii(fields: dict[str, object], today: date) -> object:
    from bnplctl.validators import quick_user

    return quick_user(fields, today) if str(fields.get("name", "")).isascii() else None


def _declines_rows_without_a_user_id(fields: dict[str, object], today: date) -> object:
    from bnplctl.validators import quick_user

    return quick_user(fields, today) if fields.get("user_id") else None


def _declines_ends(fields: dict[str, object], today: date) -> object:
    from bnplctl.validators import quick_user

    stripped = all(value == str(value).strip() for value in fields.values() if value)
    return quick_user(fields, today) if stripped else None


@pytest.mark.parametrize(
    "broken",
    [_declines_all, _declines_names_beyond_ascii, _declines_rows_without_a_user_id, _declines_ends],
    ids=lambda broken: broken.__name__,
)
def test_the_fast_path_properties_fail_on_a_fast_path_that_declines_plain_rows(
    broken: Callable[..., object],
) -> None:
    """A fast path that declines plainly valid rows (every row, or a kind of them) passes
    the agreement property, and must fail the plain-rows property."""

    @settings(database=None, derandomize=True, max_examples=100)
    @given(_USER_ROWS)
    def agreement(fields: dict[str, object]) -> None:
        _agrees(broken, fields)

    @_pinned
    @settings(database=None, derandomize=True, report_multiple_bugs=False, phases=_NO_SHRINKING)
    @given(_PLAIN_USER_ROWS)
    def plain_rows(fields: dict[str, object]) -> None:
        _check_takes_plain_row(broken, fields)

    agreement()  # passes: it never sees a row the fast path declined
    with pytest.raises(AssertionError, match="declined a plainly valid row"):
        plain_rows()


def test_the_batch_fast_path_takes_plainly_valid_rows() -> None:
    from bnplctl.validators import quick_user

    fields = {
        "user_id": " u-1 ",
        "name": "  José O'Brien\t",
        "phone": "+998 90 123-45-67",
        "passport": "ab 1234567",
        "card": "4111 1111 1111 1111",
        "dob": "1990-05-17",
    }
    expected = ("u-1", "José O'Brien", "+998901234567", "AB1234567", "4111111111111111")
    assert quick_user(fields, TODAY) == (*expected, date(1990, 5, 17))
    assert quick_user(fields | {"user_id": ""}, TODAY) == (None, *expected[1:], date(1990, 5, 17))
    # Unusual ends, text that is not text, and invalid values all go to the model.
    assert quick_user(fields | {"name": "\x1cJosé"}, TODAY) is None
    assert quick_user(fields | {"card": 4111111111111111}, TODAY) is None
    assert quick_user(fields | {"card": "4111111111111112"}, TODAY) is None
    assert quick_user(fields | {"dob": "2010-01-01"}, TODAY) is None


def test_the_country_codes_are_the_ones_phonenumbers_knows() -> None:
    import phonenumbers

    known = {str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE}
    assert known == pii.COUNTRY_CODES


@given(st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True))
def test_the_phone_mask_keeps_the_country_code_phonenumbers_reads(phone: str) -> None:
    import phonenumbers

    try:
        country = str(phonenumbers.parse(phone, None).country_code)
    except phonenumbers.NumberParseException:
        return
    assert pii.mask_phone(phone).startswith(f"+{country}****")
