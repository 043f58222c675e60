"""The import rules between the layers (issue 10), read from the source with `ast`.

- core/ is sans-I/O: no asyncio, socket, sqlite3, psycopg, ldap3, subprocess,
  and no adapter (store backends, directory backends), transport or CLI; the
  one store module it may use is store/unknown_names.py, the lockout subset in
  plain Python (its SQLite table is store/sqlite_names.py);
- the drivers (sqlite3, psycopg, ldap3) only in their backends (BACKENDS);
- the wire codecs import only the vocabulary (model, steps, errors, secret);
- only the daemon/ package opens the store or the key (store/crypto themselves aside);
- cli/ is a client of the control socket: no core, store or directory;
- only transport/ imports socket or selectors (issue 19): sockets are served by
  its one conversation server, and the CLI's client is transport/control_client.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "pam_jctotp"
# Backends; the protocols themselves are the packages (store/__init__, directory/__init__).
ADAPTERS = ("pam_jctotp.store.", "pam_jctotp.directory.")
FORBIDDEN_IN_CORE = ("asyncio", "socket", "sqlite3", "psycopg", "ldap3", "subprocess",
                     "pam_jctotp.transport", "pam_jctotp.cli", "pam_jctotp.daemon",
                     "pam_jctotp.audit", *ADAPTERS)
PURE_STORE = ("pam_jctotp.store.unknown_names",)
# Where each driver may be imported, and why anywhere outside store/ or directory/.
BACKENDS = {
    "sqlite3": {"store/sqlite.py", "store/sqlite_names.py", "store/wal.py",
                # `jctotp fleet import` reads this host's old SQLite file, read-only
                "fleet/admin.py"},
    "psycopg": {"store/postgres/__init__.py", "store/postgres/pool.py",
                "store/postgres/schema.py", "store/postgres/users.py", "store/pg_hosts.py",
                "store/pg_codecheck.py", "store/pg_userwrites.py",
                # `jctotp fleet host add`: parses the owner's libpq URI (conninfo_to_dict)
                "fleet/hosts.py",
                # `jctotpd --check`: one read of the key check, before any store opens
                "preflight.py",
                # the fleet audit's SQL, with its only caller (Jsonb for the fields)
                "fleet/audit_table.py"},
    "ldap3": {"directory/ldap.py", "directory/ldap_conn.py"},
}
VOCABULARY = ("pam_jctotp.model", "pam_jctotp.core.steps", "pam_jctotp.errors",
              "pam_jctotp.secret")


def imports(path: Path, module: str = "") -> tuple[set[str], set[str]]:
    """The modules this file imports (absolute), and the names it takes from them."""
    module = module or "pam_jctotp." + ".".join(path.relative_to(PKG).with_suffix("").parts)
    package = module.removesuffix(".__init__") if path.name == "__init__.py" \
        else module.rsplit(".", 1)[0]
    mods: set[str] = set()
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            mods.add(mod)
            for alias in node.names:
                names.add(alias.name)
                if is_module(f"{mod}.{alias.name}"):
                    mods.add(f"{mod}.{alias.name}")
    return mods, names


def is_module(name: str) -> bool:
    if not name.startswith("pam_jctotp."):
        return False
    rel = PKG.joinpath(*name.split(".")[1:])
    return rel.with_suffix(".py").exists() or (rel / "__init__.py").exists()


def modules(folder: str = "") -> list[Path]:
    return sorted((PKG / folder).rglob("*.py"))


def hits(path: Path, banned: tuple[str, ...], module: str = "") -> list[str]:
    return sorted(m for m in imports(path, module)[0]
                  if any(m.startswith(b) if b.endswith(".") else m == b or m.startswith(b + ".")
                         for b in banned))


@pytest.mark.parametrize("path", modules("core"), ids=lambda p: p.name)
def test_core_is_sans_io(path):
    assert [m for m in hits(path, FORBIDDEN_IN_CORE) if m not in PURE_STORE] == []


def test_the_pure_store_module_imports_no_driver():
    """What core/ may import of store/ does no I/O of its own."""
    for module in PURE_STORE:
        path = PKG.joinpath(*module.split(".")[1:]).with_suffix(".py")
        assert hits(path, ("sqlite3", "psycopg", "ldap3", "socket", "subprocess")) == []


@pytest.mark.parametrize("driver", sorted(BACKENDS))
def test_drivers_only_in_their_backends(driver):
    users = {p.relative_to(PKG).as_posix() for p in modules() if hits(p, (driver,))}
    assert users - BACKENDS[driver] == set()


@pytest.mark.parametrize("name", ["pam_wire.py", "control_wire.py"])
def test_wire_codecs_import_only_the_vocabulary(name):
    own = {n for n in imports(PKG / "transport" / name)[0] if n.startswith("pam_jctotp")}
    assert {n for n in own if not n.startswith(VOCABULARY)} == set()


def test_only_the_daemon_opens_the_store_or_the_key():
    openers = {p.relative_to(PKG).as_posix() for p in modules()
               if hits(p, ("pam_jctotp.store.sqlite", "pam_jctotp.store.postgres"))
               or "load_or_create_key" in imports(p)[1]}
    # the postgres package's own modules import each other
    assert openers - {"store/postgres/__init__.py", "store/postgres/schema.py",
                      "store/postgres/users.py"} == {"daemon/build.py"}


# Modules outside transport/ that still open sockets of their own, each for a reason
# the transport does not serve; this list may only shrink.
# Modules outside transport/ that may still use sockets, and why (none: doctor's probes
# and the store's wake-up of a stalled connection are transport/probes.py).
SOCKETS_ELSEWHERE: dict[str, str] = {}
HOST_NAME_ONLY = {"gethostname"}   # `socket` for the host's name is no socket I/O


def _imports_all_of_it(node: ast.AST) -> bool:
    """`from socket import ...`, or selectors at all."""
    if isinstance(node, ast.ImportFrom):
        return node.module in ("socket", "selectors")
    return isinstance(node, ast.Import) and any(a.name == "selectors" for a in node.names)


def socket_uses(text: str) -> set[str]:
    """What of `socket`/`selectors` a module uses: socket's attributes, and "*" for
    selectors or a `from socket import ...`."""
    used: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "socket":
            used.add(node.attr)
        elif _imports_all_of_it(node):
            used.add("*")
    return used


@pytest.mark.parametrize("path", [p for p in modules() if p.parent.name != "transport"],
                         ids=lambda p: p.relative_to(PKG).as_posix())
def test_only_the_transport_opens_sockets(path):
    rel = path.relative_to(PKG).as_posix()
    used = socket_uses(path.read_text())
    if rel in SOCKETS_ELSEWHERE:
        assert used, f"{rel} no longer uses sockets: take it off SOCKETS_ELSEWHERE"
        return
    assert used <= HOST_NAME_ONLY, f"{rel} uses socket.{sorted(used - HOST_NAME_ONLY)}"


def test_the_socket_rule_catches_a_violation():
    assert socket_uses("import socket\ns = socket.socket(socket.AF_UNIX)\n") == {
        "socket", "AF_UNIX"}
    assert socket_uses("import selectors\n") == {"*"}
    assert socket_uses("from socket import socketpair\n") == {"*"}
    assert socket_uses("import socket\nname = socket.gethostname()\n") <= HOST_NAME_ONLY
