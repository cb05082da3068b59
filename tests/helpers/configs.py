"""Configs that must be refused, each with the key path its error names: the config parser's tests and
the JSON Schema's share them (the shape errors among them are the schema's too)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent  # the repository

# (config, the key path of its error); the shape errors among them are the schema test's too
BAD = [
    ({"listeners": [{"port": "eighty"}]}, "listeners[0].port"),
    ({"listeners": [{"port": 70000}]}, "listeners[0].port"),
    ({"listeners": [{"serializers": ["xml"]}]}, "listeners[0].serializers"),
    ({"listeners": [{"path": "ws"}]}, "listeners[0].path"),
    ({"listeners": [{}, {"colour": 1}]}, "listeners[1].colour"),
    ({"realms": [{"uri": "a"}, {"uri": "a"}]}, "realms[1].uri"),
    ({"realms": [{"uri": "a", "limits": {"rate": {"limit": 0, "duration": 1}}}]}, "realms[0].limits.rate.limit"),
    ({"realms": [{"uri": "a", "roles": {"x": {"limits": {"expires_in": -1}}}}]}, "realms[0].roles.x.limits.expires_in"),
    ({"realms": [{"uri": "a", "roles": {"x": {"permissions": [{"uri": "a", "allow": ["eat"]}]}}}]},
     "realms[0].roles.x.permissions[0].allow"),
    ({"realms": [{"uri": "a", "roles": {"x": {"permissions": [{"uri": "a", "match": "regex"}]}}}]},
     "realms[0].roles.x.permissions[0].match"),
    ({"realms": [{"uri": "a", "users": {"bob": {"role": "x", "ticket": "plain"}}}]}, "realms[0].users.bob.ticket"),
    ({"realms": [{"uri": "a", "users": {"bob": {"role": "x", "cryptosign": ["zz"]}}}]},
     "realms[0].users.bob.cryptosign"),
    ({"realms": [{"uri": "a", "auth": {"ticket": "yes"}}]}, "realms[0].auth.ticket"),
    ({"storage": {"backend": "etcd"}}, "storage.backend"),
    ({"listeners": [{"auto_ping_interval": 0.5}]}, "listeners[0].auto_ping_interval"),
    ({"listeners": [{"hello_timeout": 0}]}, "listeners[0].hello_timeout"),
    ({"limits": {"admin_reserve": None}}, "limits.admin_reserve"),
    ({"limits": {"max_pending_connections": 0}}, "limits.max_pending_connections"),
    ({"limits": {"max_retained_bytes": None}}, "limits.max_retained_bytes"),
    ({"bogus": 1}, "bogus"),
    ([1, 2], "(top level)"),
    ({"version": 2}, "version"),
    ({"version": "1"}, "version"),
]
