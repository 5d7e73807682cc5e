"""Who may use the hotline: accounts, roles and password hashing (Argon2), for the console, the CLI and migrations."""
from .accounts import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    Account,
    AccountExists,
    AccountNotFound,
    AccountStore,
    Role,
    check_password_policy,
    normalize_username,
)

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "Account",
    "AccountExists",
    "AccountNotFound",
    "AccountStore",
    "Role",
    "check_password_policy",
    "normalize_username",
]
