"""The authenticated user as handlers see one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user, as the doors see one: who, which tenant, what they may do.

    `partners` and `customers` are the tenants whose objects the user sees (their own, the
    customers of their partner, and their scopes); a gooee user sees everything (`is_admin`).
    """

    user_id: str
    username: str
    account_type: str
    partner_id: str | None = None
    customer_id: str | None = None
    partners: frozenset[str] = frozenset()
    customers: frozenset[str] = frozenset()
    permissions: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return self.account_type == "gooee"

    def may(self, permission: str) -> bool:
        return self.is_admin or permission in self.permissions
