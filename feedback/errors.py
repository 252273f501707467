"""Domain errors raised by services and validators, rendered by the API's one exception handler
(``feedback.api.errors``) as ``{"errors": [{"field", "code", "detail"}]}``."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str | None
    code: str
    detail: str

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


class ServiceError(Exception):
    """A refusal with a status code and one or more field errors."""

    status_code = 400

    def __init__(self, errors: list[FieldError] | FieldError) -> None:
        self.errors = errors if isinstance(errors, list) else [errors]
        super().__init__("; ".join(f"{e.field}: {e.detail}" for e in self.errors))

    @classmethod
    def one(cls, field: str | None, code: str, detail: str) -> ServiceError:
        return cls(FieldError(field, code, detail))


class InvalidInput(ServiceError):
    status_code = 400


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    """The request is valid but clashes with stored state (409)."""

    status_code = 409


class Forbidden(ServiceError):
    """The actor may not do this here (403)."""

    status_code = 403
