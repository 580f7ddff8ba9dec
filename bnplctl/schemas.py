"""Validated inputs: every option and imported row becomes one of these at the edge.

``hide_input_in_errors`` keeps raw values out of validation errors, and the
sensitive fields are excluded from ``repr`` so a logged model shows none of them.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bnplctl import pii
from bnplctl.errors import InvalidInput
from bnplctl.validators import (
    id_field,
    new_user_id,
    own_passport_checked,
    parse_date,
    person_name,
    required_id,
    text_field,
    timestamp,
    webhook_status,
)

M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], fields: dict[str, Any], context: dict[str, Any] | None = None) -> M:
    """``model`` from ``fields``, the first failure turned into ``InvalidInput`` (exit 65)."""
    try:
        return model.model_validate(fields, context=context)
    except ValidationError as exc:
        raise InvalidInput(validation_message(exc)) from None


def validation_message(exc: ValidationError) -> str:
    """The first error as ``field: reason``, never with the input value."""
    return _message(exc.errors(include_input=False, include_url=False)[0])


def _field(error: Any) -> str:
    return ".".join(str(part) for part in error["loc"]) or "input"


def _message(error: Any) -> str:
    """One pydantic error as ``field: reason``: our own ``InvalidInput`` message when a
    validator raised it, else pydantic's reason (``required`` when missing)."""
    original = (error.get("ctx") or {}).get("error")
    if isinstance(original, InvalidInput):
        return original.message
    ctx = error.get("ctx") or {}
    reasons = {
        "missing": "required",
        "string_too_short": (
            "required"
            if ctx.get("min_length") == 1
            else f"at least {ctx.get('min_length')} characters"
        ),
        "string_too_long": f"at most {ctx.get('max_length')} characters",
    }
    reason = reasons.get(error["type"], error["msg"])
    return f"{_field(error)}: {reason}"


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
        if not isinstance(value, str):
            return new_user_id("")  # the same message
        return new_user_id(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return person_name(value, "name")

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
        if today is None:  # the caller's business date: the clock is the root's to read
            raise TypeError("UserCreate needs today's business date to check a dob")
        return pii.check_adult(parse_date(value, "dob"), today)

    @model_validator(mode="after")
    def _user_id_holds_no_passport(self) -> UserCreate:
        own_passport_checked(self.user_id, self.passport)
        return self

    @classmethod
    def parse(cls, fields: dict[str, Any], today: date) -> UserCreate:
        """Validate, turning the first failure into ``InvalidInput`` (exit 65); ``today``:
        the business date of the age check."""
        return validated(cls, fields, {"today": today})


class UserUpdate(BaseModel):
    """``users update``'s options: a new name, a new phone, checked as at onboarding."""

    model_config = ConfigDict(
        hide_input_in_errors=True, str_strip_whitespace=True, extra="forbid", frozen=True
    )

    name: str | None = Field(default=None, min_length=1, max_length=200)
    phone: str | None = Field(default=None, repr=False)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else person_name(value, "name")

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return None if value is None else pii.normalize_phone(value)


class WebhookRow(BaseModel):
    """A row of a merchant's webhook file. ``webhooks.parse_update`` is its fast path,
    built on the same functions and property-tested to agree with it."""

    model_config = ConfigDict(hide_input_in_errors=True, frozen=True, extra="ignore")

    refund_id: str | None = Field(default=None, validate_default=True)
    event_id: str | None = None
    status: str | None = Field(default=None, validate_default=True)
    occurred_at: datetime | None = None
    amount: Decimal | None = None
    merchant_reference: str | None = None

    @field_validator("refund_id", mode="before")
    @classmethod
    def _refund_id(cls, value: Any) -> str:
        return required_id(value, "refund_id")

    @field_validator("event_id", mode="before")
    @classmethod
    def _event_id(cls, value: Any) -> str | None:
        return id_field(value, "event_id")

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> str:
        return webhook_status(value)

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _occurred_at(cls, value: Any) -> datetime | None:
        return timestamp(value, "occurred_at")

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Decimal | None:
        from bnplctl.money import parse_amount

        raw = text_field(value, "amount", 20)
        return parse_amount(raw) if raw is not None else None

    @field_validator("merchant_reference", mode="before")
    @classmethod
    def _merchant_reference(cls, value: Any) -> str | None:
        return id_field(value, "merchant_reference")

    @classmethod
    def parse(cls, fields: dict[str, Any]) -> WebhookRow:
        return validated(cls, fields)


def user_problems(fields: dict[str, Any], today: date | None = None) -> dict[str, str]:
    """Why each field present in ``fields`` fails ``UserCreate`` (``field: reason``, worded
    as ``validation_message`` words it, never with the value); fields left out are not
    reported. ``users add`` checks by the model itself, so each rule keeps one home."""
    try:
        UserCreate.model_validate(fields, context={"today": today})
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for error in exc.errors(include_input=False, include_url=False):
            if error["type"] != "missing":
                problems.setdefault(_field(error), _message(error))
        return problems
    return {}


def user_field_problem(field: str, value: str) -> str | None:
    """Why ``value`` is not a valid ``field`` of ``UserCreate``, checked alone (a value
    typed at a terminal, before the next is asked); None when it is valid."""
    return user_problems({field: value}).get(field)
