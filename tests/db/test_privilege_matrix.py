"""The privilege matrix: every role x every table, view, sequence and function of the project's schemas,
read from the catalog at test time and compared with the policy of docs/architecture.md ("Schemas",
"Roles"), written as rules.

The rules decide each (role, object, privilege) by schema, kind and a few named lists, so they hold for
objects added later: a new api function needs no edit here unless it belongs to the public catalog. Each
tuple is MUST (the role has to hold it), MAY (a per-object choice of the change that creates the object,
within what the rule allows) or NEVER. The test fails on any privilege held that no rule allows and on any
MUST that is missing, naming the rule.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

import pytest

from tests.conftest import Session

SCHEMAS = ("core", "api", "auth", "billing", "ops", "audit")
JWT_ROLES = ("app_readonly", "app_readwrite", "app_admin")  # the roles a JWT (or no JWT) selects
REQUEST_ROLES = (*JWT_ROLES, "app_payments")  # the roles the gateway switches to
ROLES = (*REQUEST_ROLES, "app_dba", "authenticator", "app_owner", "PUBLIC")

# What an anonymous visitor may reach: these api objects (any overload) and nothing else. Every visitor,
# signed in or not, must reach them. Keep this list short: each entry is a decision to publish.
PUBLIC_CATALOG = frozenset({"api.products", "api.categories", "api.get_product", "api.search_products"})

# The request context of procedures/context. Row-level security policies call them, and a policy reached
# through a view owned by app_owner checks EXECUTE as the caller, so a change may grant them to the roles
# that read such views (they reveal only the caller's own claims). Nothing else in core is ever granted.
CONTEXT_READERS = frozenset({*REQUEST_ROLES, "app_dba"})
REQUEST_CONTEXT_FUNCTIONS = frozenset(
    {
        "core.current_user_id()",
        "core.request_role()",
        "core.is_admin()",
        "core.is_service()",
        "core.request_id()",
    }
)

# The audit trail: app_dba reads the view, whose rows come masked through a function it calls as the view's
# reader; the table under it, with the rows in full, is the owner's alone.
AUDIT_VIEW = "audit.log"
AUDIT_MASK = "audit.mask_row(jsonb)"

PINNED_SEARCH_PATH = ["search_path=pg_catalog, pg_temp"]

RELATION_KINDS = {"r": "table", "p": "table", "f": "table", "v": "view", "m": "matview", "S": "sequence"}
READABLE = frozenset({"view", "matview"})
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
SEQUENCE_PRIVILEGES = ("USAGE", "SELECT", "UPDATE")


class Decision(enum.Enum):
    MUST = "must"
    MAY = "may"
    NEVER = "never"


@dataclass(frozen=True)
class Obj:
    oid: int
    schema: str
    name: str  # relname or proname
    ident: str  # schema.relname, or the regprocedure of a function
    kind: str  # table, view, matview, sequence, function
    owner: str
    extension: bool  # a member of an extension (owned by whoever installed it)
    volatility: str | None
    security_definer: bool
    config: tuple[str, ...] | None
    security_barrier: bool
    security_invoker: bool

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def is_function(self) -> bool:
        return self.kind == "function"


@dataclass(frozen=True)
class Rule:
    decision: Decision
    name: str


OBJECTS_QUERY = """
select c.oid::bigint, n.nspname, c.relname, format('%%I.%%I', n.nspname, c.relname), c.relkind::text,
  pg_get_userbyid(c.relowner),
  exists (
    select from pg_depend as d where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e'
  ),
  null::text, false, null::text[],
  coalesce('security_barrier=true' = any (c.reloptions), false),
  coalesce('security_invoker=true' = any (c.reloptions), false)
from pg_class as c join pg_namespace as n on n.oid = c.relnamespace
where n.nspname = any (%(schemas)s) and c.relkind in ('r', 'p', 'f', 'v', 'm', 'S')
union all
select p.oid::bigint, n.nspname, p.proname, p.oid::regprocedure::text, 'function',
  pg_get_userbyid(p.proowner),
  exists (
    select from pg_depend as d where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e'
  ),
  p.provolatile::text, p.prosecdef, p.proconfig, false, false
from pg_proc as p join pg_namespace as n on n.oid = p.pronamespace
where n.nspname = any (%(schemas)s)
"""

HELD_QUERY = """
select r.role, o.oid::bigint, o.kind, g.privilege
from unnest(%(roles)s::text[]) as r (role)
cross join unnest(%(oids)s::oid[], %(kinds)s::text[]) as o (oid, kind)
cross join lateral unnest(
  case o.kind
    when 'function' then array['EXECUTE']
    when 'sequence' then %(sequence_privileges)s::text[]
    else %(table_privileges)s::text[]
  end
) as g (privilege)
where case
  when o.kind = 'function' then has_function_privilege(r.role, o.oid, g.privilege)
  when o.kind = 'sequence' then has_sequence_privilege(r.role, o.oid, g.privilege)
  -- a column grant counts: has_any_column_privilege covers table-level and column-level grants
  when g.privilege in ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')
    then has_any_column_privilege(r.role, o.oid, g.privilege)
  else has_table_privilege(r.role, o.oid, g.privilege)
end
"""


def table_privileges(db: Session) -> tuple[str, ...]:
    if int(db.one("select current_setting('server_version_num')")) >= 170000:
        return (*TABLE_PRIVILEGES, "MAINTAIN")
    return TABLE_PRIVILEGES


def privileges_of(obj: Obj, table_privs: tuple[str, ...]) -> tuple[str, ...]:
    if obj.is_function:
        return ("EXECUTE",)
    if obj.kind == "sequence":
        return SEQUENCE_PRIVILEGES
    return table_privs


def load_objects(db: Session) -> list[Obj]:
    rows = db.all(OBJECTS_QUERY, {"schemas": list(SCHEMAS)})
    objects = []
    for oid, schema, name, ident, kind, owner, ext, vol, secdef, config, barrier, invoker in rows:
        objects.append(
            Obj(
                oid=oid,
                schema=schema,
                name=name,
                ident=ident,
                kind=kind if kind == "function" else RELATION_KINDS[kind],
                owner=owner,
                extension=ext,
                volatility=vol,
                security_definer=secdef,
                config=tuple(config) if config is not None else None,
                security_barrier=barrier,
                security_invoker=invoker,
            )
        )
    return objects


def load_held(db: Session, objects: list[Obj], table_privs: tuple[str, ...]) -> set[tuple[str, str, str]]:
    """Every (role, object, privilege) a role holds, directly, through a role it inherits, or via PUBLIC."""
    by_oid_kind = {(o.oid, o.kind): o for o in objects}
    rows = db.all(
        HELD_QUERY,
        {
            "roles": [r.lower() if r == "PUBLIC" else r for r in ROLES],
            "oids": [o.oid for o in objects],
            "kinds": [o.kind for o in objects],
            "sequence_privileges": list(SEQUENCE_PRIVILEGES),
            "table_privileges": list(table_privs),
        },
    )
    return {
        ("PUBLIC" if role == "public" else role, by_oid_kind[(oid, kind)].ident, privilege)
        for role, oid, kind, privilege in rows
    }


def decide(role: str, obj: Obj, privilege: str) -> Rule:
    """The policy. The first rule that speaks decides."""
    read_or_call = (obj.is_function and privilege == "EXECUTE") or (
        obj.kind in READABLE and privilege == "SELECT"
    )

    if role == "PUBLIC":
        return Rule(Decision.NEVER, "PUBLIC has no privilege anywhere")
    if role == "app_owner":
        if obj.owner == "app_owner":
            return Rule(Decision.MUST, "app_owner owns every object and keeps all privileges")
        return Rule(Decision.NEVER, "app_owner holds nothing it does not own")
    if role == "authenticator":
        if obj.schema == "auth" and obj.is_function:
            return Rule(Decision.MUST, "the gateway's login executes every auth function")
        return Rule(Decision.NEVER, "the gateway's login reaches only the auth functions")

    if obj.schema == "core":
        if obj.ident in REQUEST_CONTEXT_FUNCTIONS and role in CONTEXT_READERS and privilege == "EXECUTE":
            return Rule(Decision.MAY, "readers of views over RLS tables may evaluate the request context")
        return Rule(Decision.NEVER, "core is the owner's alone")
    if obj.schema == "auth":
        return Rule(Decision.NEVER, "auth is for the gateway's login only")
    if obj.schema == "audit":
        if role == "app_dba" and obj.ident == AUDIT_VIEW and privilege == "SELECT":
            return Rule(Decision.MUST, "app_dba reads the audit log, masked")
        if role == "app_dba" and obj.ident == AUDIT_MASK:
            return Rule(Decision.MUST, "app_dba executes the mask audit.log calls as its reader")
        return Rule(
            Decision.NEVER,
            "audit is written by triggers; app_dba reads audit.log only, never the rows in full",
        )
    if obj.schema == "billing":
        if role == "app_payments" and read_or_call:
            return Rule(Decision.MAY, "billing functions and views are app_payments' (per object)")
        return Rule(Decision.NEVER, "billing belongs to app_payments alone; no JWT role executes it")
    if obj.schema == "ops":
        if role == "app_dba" and read_or_call:
            return Rule(Decision.MAY, "app_dba reads and runs ops (per object)")
        if role == "app_admin" and (
            (obj.kind in READABLE and privilege == "SELECT")
            or (read_or_call and obj.volatility in {"s", "i"})
        ):
            return Rule(Decision.MAY, "app_admin reads ops: views and read-only functions (per object)")
        return Rule(Decision.NEVER, "ops is app_dba's, and app_admin's to read")
    if obj.schema == "api":
        if obj.qualified in PUBLIC_CATALOG:
            if role in JWT_ROLES and read_or_call:
                return Rule(Decision.MUST, "every visitor reaches the public catalog")
            return Rule(
                Decision.NEVER, "the public catalog is read and called, never written, by the JWT roles"
            )
        if role == "app_readonly":
            return Rule(Decision.NEVER, "anonymous visitors reach only PUBLIC_CATALOG")
        if role in {"app_readwrite", "app_admin"} and read_or_call:
            return Rule(Decision.MAY, "api objects are granted per object to the signed-in roles")
        if role == "app_dba" and obj.kind in READABLE and privilege == "SELECT":
            return Rule(Decision.MAY, "app_dba may read api views for reporting (per object)")
        return Rule(Decision.NEVER, "api is the JWT roles' surface: views are read, functions called")
    return Rule(Decision.NEVER, "not part of any rule")


@dataclass(frozen=True)
class Violation:
    role: str
    ident: str
    privilege: str
    rule: str
    held: bool  # True: held but not allowed; False: required but missing
    via_public: bool

    def __str__(self) -> str:
        what = "holds" if self.held else "lacks"
        via = " (granted to PUBLIC)" if self.via_public else ""
        return f"{self.role} {what} {self.privilege} on {self.ident}{via}: {self.rule}"


def violations(
    objects: Iterable[Obj], held: set[tuple[str, str, str]], table_privs: tuple[str, ...]
) -> list[Violation]:
    """Every tuple against the policy. A forbidden privilege that every role holds through PUBLIC is
    reported once, under PUBLIC, where it has to be revoked."""
    found = []
    for obj in objects:
        for privilege in privileges_of(obj, table_privs):
            via_public = ("PUBLIC", obj.ident, privilege) in held
            for role in ROLES:
                rule = decide(role, obj, privilege)
                has = (role, obj.ident, privilege) in held
                if has and rule.decision is Decision.NEVER and via_public and role != "PUBLIC":
                    continue
                if has and rule.decision is Decision.NEVER:
                    found.append(Violation(role, obj.ident, privilege, rule.name, True, via_public))
                elif not has and rule.decision is Decision.MUST:
                    found.append(Violation(role, obj.ident, privilege, rule.name, False, via_public))
    return sorted(found, key=lambda v: (v.role, v.ident, v.privilege))


def matrix(db: Session) -> tuple[list[Obj], set[tuple[str, str, str]], tuple[str, ...]]:
    db.as_superuser()
    table_privs = table_privileges(db)
    objects = load_objects(db)
    return objects, load_held(db, objects, table_privs), table_privs


def report(found: list[Violation]) -> str:
    return "\n".join(str(v) for v in found)


# --- the matrix -----------------------------------------------------------------------------------------


def test_the_matrix_sees_every_schema(db: Session) -> None:
    objects, held, _ = matrix(db)
    idents = {o.ident for o in objects}
    assert {
        "core.users",
        "core.addresses",
        "auth.sessions",
        AUDIT_VIEW,
        "audit.log_entries",
        "api.me()",
    } <= idents
    assert {o.schema for o in objects} >= {"core", "api", "auth", "audit"}
    assert ("app_readwrite", "api.me()", "EXECUTE") in held
    assert ("authenticator", "auth.session_active(uuid,bigint,text)", "EXECUTE") in held
    assert ("app_owner", "core.users", "SELECT") in held


@pytest.mark.parametrize("role", ROLES)
def test_privilege_matrix(db: Session, role: str) -> None:
    """The exact set of (role, object, privilege) held equals the policy: nothing more, no MUST missing."""
    objects, held, table_privs = matrix(db)
    found = [v for v in violations(objects, held, table_privs) if v.role == role]
    assert not found, f"{len(found)} privilege(s) against the policy:\n{report(found)}"


def test_the_rules_catch_what_a_careless_change_would_grant(db: Session) -> None:
    """The matrix can fail: grants a new change might get wrong, made inside the rolled-back transaction."""
    db.conn.execute("set local role app_owner")
    db.conn.execute("create function billing.probe() returns int language sql as 'select 1'")
    db.conn.execute("create function api.probe_public() returns int language sql as 'select 1'")
    db.conn.execute("create view api.probe_view as select 1 as one")
    db.conn.execute("grant execute on function billing.probe() to app_admin")
    db.conn.execute("grant execute on function api.probe_public() to app_readonly")
    db.conn.execute("grant insert on api.probe_view to app_readwrite")
    db.conn.execute("grant select on core.users to app_readwrite")
    db.conn.execute("grant execute on function auth.login_lookup(text) to app_readwrite")
    db.conn.execute("grant usage on sequence audit.log_entries_id_seq to public")
    db.conn.execute("grant select (actor_role, new_row) on audit.log_entries to app_dba")
    db.conn.execute("revoke execute on function auth.session_active(uuid, bigint, text) from authenticator")
    db.as_superuser()
    objects, held, table_privs = matrix(db)
    found = {(v.role, v.ident, v.privilege, v.held) for v in violations(objects, held, table_privs)}
    assert {
        ("app_admin", "billing.probe()", "EXECUTE", True),
        ("app_readonly", "api.probe_public()", "EXECUTE", True),
        ("app_readwrite", "api.probe_view", "INSERT", True),
        ("app_readwrite", "core.users", "SELECT", True),
        ("app_readwrite", "auth.login_lookup(text)", "EXECUTE", True),
        ("PUBLIC", "audit.log_entries_id_seq", "USAGE", True),
        ("app_dba", "audit.log_entries", "SELECT", True),
        ("authenticator", "auth.session_active(uuid,bigint,text)", "EXECUTE", False),
    } <= found


# --- properties of the objects themselves ----------------------------------------------------------------


def test_every_api_function_is_security_definer_with_a_pinned_search_path(db: Session) -> None:
    objects, _, _ = matrix(db)
    functions = [o for o in objects if o.schema == "api" and o.is_function]
    assert functions
    wrong = [
        o.ident for o in functions if not o.security_definer or list(o.config or ()) != PINNED_SEARCH_PATH
    ]
    assert wrong == []


def test_every_security_definer_function_pins_its_search_path(db: Session) -> None:
    objects, _, _ = matrix(db)
    wrong = [o.ident for o in objects if o.security_definer and list(o.config or ()) != PINNED_SEARCH_PATH]
    assert wrong == []


def test_every_auth_function_is_security_definer(db: Session) -> None:
    objects, _, _ = matrix(db)
    assert [o.ident for o in objects if o.schema == "auth" and o.is_function and not o.security_definer] == []


def test_every_project_object_is_owned_by_app_owner(db: Session) -> None:
    """Extension members belong to the extension (and whoever installed it); everything else to app_owner."""
    objects, _, _ = matrix(db)
    assert [(o.ident, o.owner) for o in objects if not o.extension and o.owner != "app_owner"] == []


def test_api_views_are_security_barrier_owner_views(db: Session) -> None:
    objects, _, _ = matrix(db)
    views = [o for o in objects if o.schema == "api" and o.kind in READABLE]
    assert views
    assert [
        o.ident for o in views if o.kind == "view" and (not o.security_barrier or o.security_invoker)
    ] == []


def test_public_catalog_names_are_api_objects() -> None:
    assert all(name.startswith("api.") and name.count(".") == 1 for name in PUBLIC_CATALOG)
