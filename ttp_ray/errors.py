"""Exceptions shared by every stage.

`TTPValidationError` is a `ValueError` that names the offending parameter and value (vLLM's pattern);
the Serve ingress maps it to HTTP 4xx. `DataError` names the file, record and field of bad input.
"""

from __future__ import annotations

from typing import Any


class TTPValidationError(ValueError):
    """A bad parameter: says which one, what it got and how to fix it."""

    def __init__(self, message: str, *, parameter: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.value = value

    def __str__(self) -> str:
        base = super().__str__()
        if self.parameter is None:
            return base
        return f"{base} (parameter={self.parameter!r}, value={self.value!r})"


class DataError(ValueError):
    """A malformed input file or record: names the file, the record id and the field."""

    def __init__(self, reason: str, *, file: str, record_id: str | None = None, field: str | None = None) -> None:
        self.reason = reason
        self.file = str(file)
        self.record_id = record_id
        self.field = field
        where = self.file
        if record_id is not None:
            where += f", record {record_id!r}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {reason}")
