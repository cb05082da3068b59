"""Realm lookup: static realms from config; dynamic ones added and removed at run time."""

from __future__ import annotations

from collections.abc import Iterable

from realms.realm import Realm


class RealmRegistry:
    def __init__(self, realms: Iterable[Realm] = ()) -> None:
        self._realms: dict[str, Realm] = {r.uri: r for r in realms}

    def get(self, uri: str) -> Realm | None:
        return self._realms.get(uri)

    def add(self, realm: Realm) -> None:
        if realm.uri in self._realms:
            raise KeyError(f"realm {realm.uri!r} exists")
        self._realms[realm.uri] = realm

    def remove(self, uri: str) -> Realm:
        return self._realms.pop(uri)

    def list(self) -> list[Realm]:
        return list(self._realms.values())

    def __contains__(self, uri: str) -> bool:
        return uri in self._realms
