"""Domain services: functions that take a Session and never commit (the caller owns the
transaction). No Flask imports here."""


class ServiceError(Exception):
    """A refusal the caller shows to the user (HTTP status given where it matters)."""

    status = 400

    def __init__(self, message: str, details: object = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        if status is not None:
            self.status = status


class NotFound(ServiceError):
    status = 404
