"""Validated inputs: every option and imported row becomes one of these at the edge.

``hide_input_in_errors`` keeps raw values out of validation errors, and the
sensitive fields are excluded from ``repr`` so a logged model shows none of them.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from bnplctl import pii
from bnplctl.errors import InvalidInput
from bnplctl.validators import (
    EARLIEST_START,
    USER_ID_PATTERN,
    no_control_characters,
    parse_date,
    reference,
)


def validation_message(exc: ValidationError) -> str:
    """The first error as ``field: reason``, never with the input value."""
    first = exc.errors(include_input=False, include_url=False)[0]
    original = (first.get("ctx") or {}).get("error")
    if isinstance(original, InvalidInput):
        return original.message
    field = ".".join(str(part) for part in first["loc"]) or "input"
    reason = "required" if first["type"] == "missing" else first["msg"]
    return f"{field}: {reason}"


class UserCreate(BaseModel):
    """A user to onboard; phone, passport and card come out normalised."""

    model_config = ConfigDict(
        hide_input_in_errors=True,
        str_strip_whitespace=True,
        coerce_numbers_to_str=True,
        extra="ignore",
        frozen=True,
    )

    user_id: str | None = None
    name: str = Field(min_length=1, max_length=200)
    phone: str = Field(repr=False)
    passport: str = Field(repr=False)
    card: str = Field(repr=False)
    dob: date

    @field_validator("user_id", mode="before")
    @classmethod
    def _user_id(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str) or not USER_ID_PATTERN.fullmatch(value.strip()):
            raise InvalidInput(
                "user_id: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return value.strip()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return no_control_characters(value, "name")

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        return pii.normalize_phone(value)

    @field_validator("passport")
    @classmethod
    def _passport(cls, value: str) -> str:
        return pii.normalize_passport(value)

    @field_validator("card")
    @classmethod
    def _card(cls, value: str) -> str:
        return pii.normalize_card(value)

    @field_validator("dob", mode="before")
    @classmethod
    def _dob(cls, value: Any, info: ValidationInfo) -> date:
        today = (info.context or {}).get("today")
        if today is None:
            from bnplctl.clock import business_today

            today = business_today()
        return pii.check_adult(parse_date(value, "dob"), today)

    @classmethod
    def parse(cls, fields: dict[str, Any], today: date | None = None) -> UserCreate:
        """Validate, turning the first failure into ``InvalidInput`` (exit 65).

        ``today`` (the business date for the age check) saves a batch a clock read per row.
        """
        try:
            return cls.model_validate(fields, context={"today": today})
        except ValidationError as exc:
            raise InvalidInput(validation_message(exc)) from None


class _Request(BaseModel):
    """A command's options, validated at the edge by the same functions as the rows of a
    file; the first failure becomes ``InvalidInput`` (65) naming the option."""

    model_config = ConfigDict(hide_input_in_errors=True, frozen=True, extra="forbid")

    @classmethod
    def parse(cls, **fields: Any) -> Self:
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise InvalidInput(validation_message(exc)) from None


class PlanRequest(_Request):
    """``plans preview`` and ``plans create``: amount, installments, start, reference."""

    amount: Decimal
    installments: int
    start: date | None = None
    merchant_reference: str | None = None

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Decimal:
        from bnplctl.money import parse_amount

        return parse_amount(value)

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: Any) -> date | None:
        if value is None:
            return None
        parsed = parse_date(value, "start")
        if parsed < EARLIEST_START:
            raise InvalidInput(f"start: must be {EARLIEST_START} or later")
        return parsed

    @field_validator("merchant_reference", mode="before")
    @classmethod
    def _merchant_reference(cls, value: Any) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return reference(value, "merchant-reference")


class RefundRequest(_Request):
    """``refunds create``: the merchant's transaction id and the amount."""

    transaction_id: str
    amount: Decimal

    @field_validator("transaction_id", mode="before")
    @classmethod
    def _transaction_id(cls, value: Any) -> str:
        return reference(value, "transaction-id")

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Decimal:
        from bnplctl.money import parse_amount

        return parse_amount(value)
