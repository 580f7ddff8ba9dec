"""Personal data: validate, normalise and mask phone, card and passport numbers (their
protection, encryption and fingerprints, is ``crypto.py``'s).

Nothing here ever puts a raw phone, card or passport number into an exception
message: errors name the field and the rule that failed, nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from functools import cache
from typing import Any

from bnplctl.clock import age_on
from bnplctl.errors import InvalidInput

_PASSPORT_RE = re.compile(r"([A-Z]+)([0-9]+)")
_CARD_SEPARATORS = re.compile(r"[ \-]")
_PHONE_SEPARATORS = re.compile(r"[ \-().]")
_LETTERS = re.compile(r"[A-Za-z]*")


# --- validation and normalisation -------------------------------------------------------


def normalize_phone(raw: str) -> str:
    """An international phone number in E.164 (``+998901234567``)."""
    import phonenumbers

    cleaned = _PHONE_SEPARATORS.sub("", raw.strip())
    if not cleaned.startswith("+"):
        raise InvalidInput("phone: must be in international format, starting with +")
    if not (cleaned[1:].isascii() and cleaned[1:].isdigit()):
        # An extension, letters or other scripts' digits would be dropped or rewritten.
        raise InvalidInput(
            "phone: only the digits 0-9 after the +, with spaces, dashes, dots or brackets"
        )
    canonical = _parse_canonical(cleaned)
    if canonical is not None:
        code, national = canonical
        validator = _national_validator(code)
        verdict = validator(national) if validator is not None else None
        if verdict is False:
            raise InvalidInput("phone: not a valid number for its country")
        if verdict:
            return _storable(f"+{code}{national}")
    # Undecided above (several regions share the code, or parsing may rewrite the number).
    try:
        parsed = phonenumbers.parse(cleaned, None)
    except phonenumbers.NumberParseException:
        raise InvalidInput("phone: not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidInput("phone: not a valid number for its country")
    return _storable(str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)))


# What the users table stores (its CHECK): E.164 with 7 to 15 digits. A few valid
# service numbers are shorter (an Iranian UAN, +98 9601): not a customer's phone.
_STORED_PHONE = re.compile(r"\+[1-9][0-9]{6,14}")


def _storable(e164: str) -> str:
    if not _STORED_PHONE.fullmatch(e164):
        raise InvalidInput("phone: must have 7 to 15 digits")
    return e164


@cache
def _national_validator(country_code: int) -> Callable[[str], bool | None] | None:
    """``phonenumbers.is_valid_number`` for the national numbers of a calling code that
    belongs to exactly one geographic region, with its patterns compiled once.

    The validator answers None for a number the library would rewrite while parsing
    (one that starts with the region's national prefix for parsing): those keep the
    library's own path.

    The library's test: the number matches the region's general description, then the
    description of at least one number type, where a description whose possible lengths
    exclude the number's length does not match. Here the type patterns are grouped by
    length into one alternation each, so a number costs two regular-expression matches.
    Other calling codes (shared by several regions, or non-geographic) return None and
    keep the library's own path. Property-tested against the library.
    """
    import phonenumbers
    from phonenumbers.phonemetadata import PhoneMetadata

    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code, ())
    if len(regions) != 1 or regions[0] == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
        return None
    metadata = PhoneMetadata.metadata_for_region(regions[0])
    if metadata is None:
        return None

    def described(desc: Any) -> tuple[frozenset[int], str] | None:
        if desc is None or not desc.national_number_pattern:
            return None
        return frozenset(desc.possible_length or ()), desc.national_number_pattern

    general = described(metadata.general_desc)
    if general is None:
        return None
    prefix = metadata.national_prefix_for_parsing
    rewritten = re.compile(prefix) if prefix else None
    types = [
        found
        for desc in (
            metadata.premium_rate,
            metadata.toll_free,
            metadata.shared_cost,
            metadata.voip,
            metadata.personal_number,
            metadata.pager,
            metadata.uan,
            metadata.voicemail,
            metadata.fixed_line,
            metadata.mobile,
        )  # fmt: skip
        if (found := described(desc)) is not None
    ]
    general_lengths, general_pattern = general
    general_re = re.compile(general_pattern)
    lengths = {n for allowed, _ in types for n in allowed} | set(general_lengths)
    by_length: dict[int, re.Pattern[str]] = {}
    for length in lengths:
        patterns = [pattern for allowed, pattern in types if not allowed or length in allowed]
        if patterns:
            by_length[length] = re.compile("|".join(f"(?:{p})" for p in patterns))
    unrestricted = [pattern for allowed, pattern in types if not allowed]
    other = re.compile("|".join(f"(?:{p})" for p in unrestricted)) if unrestricted else None

    def valid(national: str) -> bool | None:
        if rewritten is not None and rewritten.match(national):
            return None
        size = len(national)
        if general_lengths and size not in general_lengths:
            return False
        if general_re.fullmatch(national) is None:
            return False
        typed = by_length.get(size, other)
        return typed is not None and typed.fullmatch(national) is not None

    return valid


def _parse_canonical(cleaned: str) -> tuple[int, str] | None:
    """A fast path for "+digits" (most imports): split off the country code directly.

    E.164 country codes are prefix-free, so the first known 1-3 digit prefix is the
    code; returns (code, national digits). Anything unusual (a national part starting
    with 0, letters) returns None and goes through ``phonenumbers.parse``.
    """
    digits = cleaned[1:]
    if not (digits.isascii() and digits.isdigit()) or not 8 <= len(digits) <= 15:
        return None
    known = _calling_codes()
    for length in (1, 2, 3):
        code = int(digits[:length])
        if code in known:
            national = digits[length:]
            return None if national.startswith("0") else (code, national)
    return None


@cache
def _calling_codes() -> frozenset[int]:
    import phonenumbers

    return frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def normalize_card(raw: str) -> str:
    """Card digits (12–19, Luhn-valid), separators removed. Keep the result in memory only."""
    digits = _CARD_SEPARATORS.sub("", raw.strip())
    if not digits.isascii() or not digits.isdigit():
        raise InvalidInput("card: must contain digits only")
    if not 12 <= len(digits) <= 19:
        raise InvalidInput("card: must have 12 to 19 digits")
    if not luhn_valid(digits):
        raise InvalidInput("card: fails the Luhn check")
    return digits


# A digit in a doubled position counts as 2d, minus 9 when above 9.
_DOUBLED = str.maketrans("0123456789", "0246813579")


def luhn_valid(digits: str) -> bool:
    """The Luhn check of an ASCII digit string.

    Hand-written for the import hot path (about 10x faster than ``stdnum.luhn``, which
    the tests use as the reference implementation): the digits' byte values are summed
    at C speed, and each digit's ``ord("0")`` taken off at the end.
    """
    doubled = digits[-2::-2].translate(_DOUBLED)
    total = sum(digits[-1::-2].encode()) + sum(doubled.encode()) - 48 * len(digits)
    return total % 10 == 0


def normalize_passport(raw: str) -> str:
    """Letters then digits, 6–20 characters, upper-cased."""
    value = raw.strip().replace(" ", "").upper()
    if not 6 <= len(value) <= 20:
        raise InvalidInput("passport: must be 6 to 20 characters")
    if not value.isascii() or not _PASSPORT_RE.fullmatch(value):
        raise InvalidInput("passport: must be letters followed by digits")
    return value


def check_adult(birth: date, on: date, minimum_age: int = 18) -> date:
    if birth > on:
        raise InvalidInput("dob: is in the future")
    if birth.year < 1900:
        raise InvalidInput("dob: is before 1900")
    if age_on(birth, on) < minimum_age:
        raise InvalidInput(f"dob: the user must be at least {minimum_age} years old")
    return birth


def card_brand(digits: str) -> str:
    """The card network, from the leading digits (IIN ranges)."""
    two, four, six = int(digits[:2]), int(digits[:4]), int(digits[:6])
    if digits.startswith("4"):
        return "visa"
    if 51 <= two <= 55 or 222100 <= six <= 272099:
        return "mastercard"
    if two in (34, 37):
        return "amex"
    if four == 8600:
        return "uzcard"
    if four == 9860:
        return "humo"
    if 2200 <= four <= 2204:
        return "mir"
    if four == 6011 or two == 65 or 644 <= int(digits[:3]) <= 649:
        return "discover"
    if 3528 <= four <= 3589:
        return "jcb"
    if two == 62:
        return "unionpay"
    if two in (50, 56, 57, 58) or digits.startswith("6"):
        return "maestro"
    return "other"


# --- masking ----------------------------------------------------------------------------


# The country calling codes (ITU-T E.164; prefix-free), as phonenumbers knows them — a
# test keeps them equal. Masking reads them here: importing phonenumbers costs ~30 ms of
# every command that shows a user.
COUNTRY_CODES = frozenset(
    """
    1 7 20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58
    60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98 211 212 213 216 218 220 221
    222 223 224 225 226 227 228 229 230 231 232 233 234 235 236 237 238 239 240 241 242
    243 244 245 246 247 248 249 250 251 252 253 254 255 256 257 258 260 261 262 263 264
    265 266 267 268 269 290 291 297 298 299 350 351 352 353 354 355 356 357 358 359 370
    371 372 373 374 375 376 377 378 380 381 382 383 385 386 387 389 420 421 423 500 501
    502 503 504 505 506 507 508 509 590 591 592 593 594 595 596 597 598 599 670 672 673
    674 675 676 677 678 679 680 681 682 683 685 686 687 688 689 690 691 692 800 808 850
    852 853 855 856 870 878 880 881 882 883 886 888 960 961 962 963 964 965 966 967 968
    970 971 972 973 974 975 976 977 979 992 993 994 995 996 998
    """.split()
)


def mask_phone(e164: str) -> str:
    """``+998****4567``: the country code and the last four digits."""
    digits = "".join(ch for ch in e164 if ch.isdigit())
    country = next((digits[:n] for n in (1, 2, 3) if digits[:n] in COUNTRY_CODES), "")
    if len(digits) < len(country) + 6:
        return "+" + country + "****"
    return f"+{country}****{digits[-4:]}"


def mask_card(first_digits: str, last4: str) -> str:
    """``4111 **** **** 1111``."""
    return f"{first_digits[:4]} **** **** {last4}"


def mask_passport(passport: str) -> str:
    """The leading letters and one star for each other character: ``AA*******``."""
    letters = _LETTERS.match(passport)
    prefix = letters.group(0) if letters else ""
    if len(prefix) >= len(passport):
        # Not a valid passport; show no more than a third of it.
        prefix = passport[: len(passport) // 3]
    return prefix + "*" * (len(passport) - len(prefix))
