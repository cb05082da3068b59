"""What a realm definition must get right to work at all, beyond its shape (realms/schema.py): the
checks `check-config`, `courtyard start` and the admin API share. Errors name the key path; warnings
say what works but is likely not what was meant."""

from __future__ import annotations

from realms.realm import Realm, User
from realms.schema import ConfigError
from realms.uris import is_loose_uri

CREDENTIALS = ("ticket", "wampcra", "cryptosign")  # the methods a user needs a credential for


def check_uri(uri: str, path: str, max_length: int) -> list[ConfigError]:
    """A realm URI a client can name in HELLO (else every HELLO gets wamp.error.invalid_uri)."""
    if len(uri) > max_length:
        return [ConfigError(path, f"{len(uri)} characters: longer than any client may send "
                                  f"(limits.max_uri_length {max_length})")]
    if not is_loose_uri(uri):
        return [ConfigError(path, f"{uri!r} is not a WAMP URI (dot-separated components, none empty, "
                                  "no spaces or '#'): no client could join it")]
    return []


def check_user(realm: Realm, user: User, path: str) -> list[ConfigError]:
    """The user's role exists; it has a credential for an enabled method and none for a disabled one."""
    errors = []
    if realm.roles is not None and user.role not in realm.roles:
        errors.append(ConfigError(f"{path}.role", f"role {user.role!r} is not defined in the realm's roles "
                                                  f"({', '.join(sorted(realm.roles)) or 'none'})"))
    held = [m for m in CREDENTIALS if getattr(user, m)]
    enabled = [m for m in CREDENTIALS if getattr(realm.auth, m)]
    for method in held:
        if method not in enabled:
            errors.append(ConfigError(f"{path}.{method}", f"{method} is not enabled in the realm's auth "
                                                          f"(enabled: {', '.join(enabled) or 'none'})"))
    if not any(m in enabled for m in held):
        errors.append(ConfigError(path, f"no credential for an enabled method ({', '.join(enabled) or 'none'}): "
                                        "this user can never log in"))
    return errors


def check_realm(realm: Realm, path: str, max_uri_length: int = 4096,
                users_path: str | None = None) -> tuple[list[ConfigError], list[str]]:
    """(errors, warnings) for a parsed realm; `users_path` if its users are written elsewhere (admin.users)."""
    errors = check_uri(realm.uri, f"{path}.uri", max_uri_length)
    auth = realm.auth
    if auth.anonymous and realm.roles is not None and auth.anonymous_authrole not in realm.roles:
        errors.append(ConfigError(f"{path}.auth.anonymous.authrole",
                                  f"role {auth.anonymous_authrole!r} is not defined in the realm's roles: "
                                  "anonymous clients could join and do nothing (define it, or set "
                                  "auth.anonymous: false)"))
    for authid, user in realm.users.items():
        errors.extend(check_user(realm, user, f"{users_path or path + '.users'}.{authid}"))
    warnings = []
    for name, role in (realm.roles or {}).items():
        for i, p in enumerate(role.permissions):
            if p.uri == "" and p.match != "prefix":
                what = "no URI" if p.match == "exact" else "only one-component URIs"
                warnings.append(f"{path}.roles.{name}.permissions[{i}]: uri \"\" with match {p.match} matches "
                                f"{what} (write match: prefix for every URI)")
    if realm.roles is None and auth.anonymous and realm.uri:
        warnings.append(f"{path}: anonymous clients and no roles: anyone who connects may do everything "
                        "(define roles, or set auth.anonymous: false)")
    elif realm.roles is None and realm.users:
        warnings.append(f"{path}: users but no roles: every session may do everything (define roles to "
                        "restrict them)")
    return errors, warnings
