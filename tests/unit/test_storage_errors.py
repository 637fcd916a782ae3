"""Database errors become storage errors: retryable when the server is unreachable or
restarting, refused (do not retry) when it refuses the data itself."""

import psycopg
import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from storage.db import classify
from storage.errors import StorageRefused, StorageUnavailable


class _Orig(Exception):
    def __init__(self, sqlstate):
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize("error, kind", [
    (OperationalError("SELECT 1", {}, _Orig("08006")), StorageUnavailable),  # connection failure
    (OperationalError("SELECT 1", {}, _Orig("57P01")), StorageUnavailable),  # admin shutdown
    (OperationalError("SELECT 1", {}, _Orig("40P01")), StorageUnavailable),  # deadlock
    (OperationalError("SELECT 1", {}, psycopg.OperationalError("gone")), StorageUnavailable),
    (DataError("INSERT", {}, _Orig("22P05")), StorageRefused),  # untranslatable character
    (DataError("INSERT", {}, _Orig("22003")), StorageRefused),  # numeric value out of range
    (IntegrityError("INSERT", {}, _Orig("23505")), StorageRefused),
])
def test_errors_are_classified_by_sqlstate(error, kind):
    assert type(classify(error)) is kind
