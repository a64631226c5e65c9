"""Queries on operator accounts and their API tokens (part of `Tx`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from edgefleet.hub.db.base import TxBase
from edgefleet.hub.db.models import (
    ApiTokenRow,
    UserRow,
)
from edgefleet.hub.errors import ConflictError
from edgefleet.hub.records import (
    ApiToken,
    Role,
    User,
)


def _user(row: UserRow) -> User:
    role: Role = row.role  # type: ignore[assignment]  # constrained by the services on write
    return User(name=row.name, role=role, created_at=row.created_at, disabled_at=row.disabled_at)


def _api_token(row: ApiTokenRow) -> ApiToken:
    return ApiToken(
        id=row.id,
        user=row.user,
        description=row.description,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


class OperatorQueries(TxBase):
    """Mixed into `Tx`."""

    def insert_user(self, user: User) -> None:
        if self._s.get(UserRow, user.name) is not None:
            raise ConflictError("user_exists", f"user {user.name!r} already exists")
        self._s.add(UserRow(name=user.name, role=user.role, created_at=user.created_at, disabled_at=user.disabled_at))
        try:
            self._s.flush()
        except IntegrityError as exc:
            raise ConflictError("user_exists", f"user {user.name!r} already exists") from exc

    def get_user(self, name: str) -> User | None:
        row = self._s.get(UserRow, name)
        return None if row is None else _user(row)

    def list_users(self, *, limit: int) -> list[User]:
        return [_user(row) for row in self._s.scalars(select(UserRow).order_by(UserRow.name).limit(limit))]

    def count_users(self) -> int:
        return int(self._s.scalar(select(func.count()).select_from(UserRow)) or 0)

    def disable_user(self, name: str, *, now: datetime) -> None:
        self._s.execute(update(UserRow).where(UserRow.name == name).values(disabled_at=now))

    def insert_api_token(self, token: ApiToken, *, token_hash: str) -> None:
        values = {name: getattr(token, name) for name in ApiToken.__slots__}
        self._s.add(ApiTokenRow(token_hash=token_hash, **values))
        self._s.flush()

    def find_api_token(self, token_hash: str) -> ApiToken | None:
        row = self._s.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash))
        return None if row is None else _api_token(row)

    def get_api_token(self, token_id: str) -> ApiToken | None:
        row = self._s.get(ApiTokenRow, token_id)
        return None if row is None else _api_token(row)

    def list_api_tokens(self, *, user: str | None, limit: int) -> list[ApiToken]:
        query = select(ApiTokenRow).order_by(ApiTokenRow.created_at).limit(limit)
        if user is not None:
            query = query.where(ApiTokenRow.user == user)
        return [_api_token(row) for row in self._s.scalars(query)]

    def revoke_api_token(self, token_id: str, *, now: datetime) -> None:
        self._s.execute(
            update(ApiTokenRow)
            .where(ApiTokenRow.id == token_id, ApiTokenRow.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    def touch_api_token(self, token_id: str, *, now: datetime) -> None:
        self._s.execute(update(ApiTokenRow).where(ApiTokenRow.id == token_id).values(last_used_at=now))
