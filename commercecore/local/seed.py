"""Demo data: a deterministic catalog and two demo users, and a COPY-based generator for benchmarks.

The demo catalog goes through the ordinary path (triggers, ledger, audit), so what `make run` shows is what
the product does. The generator is a bulk load: it writes products and their opening ledger rows with COPY
in one transaction with row triggers off (session_replication_role = replica), keeps stock equal to the
ledger by construction, and records one audit row for the whole load.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
from argon2 import PasswordHasher

# Public on purpose: printed by `make run` so a person can log in to the demo.
DEMO_USERS = (
    ("customer@demo.example", "demo-customer-password", "Demo Customer", "app_readwrite"),
    ("admin@demo.example", "demo-admin-password", "Demo Admin", "app_admin"),
)

CATEGORIES = (
    ("coffee", "Coffee", "Beans and ground coffee from small roasters."),
    ("tea", "Tea", "Loose-leaf teas and infusions."),
    ("brewing", "Brewing gear", "Kettles, grinders, filters and presses."),
    ("mugs", "Mugs and cups", "Stoneware, porcelain and glass."),
    ("bakery", "Bakery", "Biscuits and cakes that keep."),
    ("books", "Books", "Reading for the slow morning."),
)

ADJECTIVES = (
    "Ethiopian", "Colombian", "Smoky", "Bright", "Velvet", "Classic", "Organic", "Single-origin",
    "Roasted", "Hand-thrown", "Enamel", "Copper", "Glass", "Stoneware", "Honey", "Almond", "Dark",
    "Golden", "Misty", "Alpine",
)  # fmt: skip
NOUNS = {
    "coffee": ("Espresso Blend", "Filter Roast", "Decaf", "Cold Brew Pack", "Mocha Beans"),
    "tea": ("Green Tea", "Earl Grey", "Oolong", "Chai", "Rooibos"),
    "brewing": ("Pour-over Kettle", "Burr Grinder", "French Press", "Paper Filters", "Milk Frother"),
    "mugs": ("Mug", "Espresso Cup", "Travel Tumbler", "Latte Bowl", "Teapot"),
    "bakery": ("Shortbread", "Biscotti", "Ginger Snaps", "Fruit Cake", "Madeleines"),
    "books": ("Brewing Handbook", "Tea Atlas", "Cafe Stories", "Roaster's Notes", "Kitchen Journal"),
}
DEMO_PRODUCTS_PER_CATEGORY = 8


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    description: str
    price_minor: int
    stock: int
    category_slug: str


def _product(rng: random.Random, number: int, slug: str) -> Product:
    adjective = rng.choice(ADJECTIVES)
    noun = rng.choice(NOUNS[slug])
    name = f"{adjective} {noun}"
    description = (
        f"{name}: {rng.choice(['a house favourite', 'small batch', 'new this season', 'a classic'])}, "
        f"{rng.choice(['roasted weekly', 'packed by hand', 'made to last', 'from a family workshop'])}."
    )
    return Product(
        sku=f"{slug[:3].upper()}-{number:07d}",
        name=name,
        description=description,
        price_minor=rng.randrange(199, 9999, 10),
        stock=rng.randrange(0, 200),
        category_slug=slug,
    )


def demo_products() -> list[Product]:
    """The fixed demo catalog: the same products, prices and stock on every machine."""
    rng = random.Random(20261124)  # noqa: S311 - reproducible demo data, not a secret
    return [
        _product(rng, index * 1000 + number, slug)
        for index, (slug, _name, _description) in enumerate(CATEGORIES, start=1)
        for number in range(1, DEMO_PRODUCTS_PER_CATEGORY + 1)
    ]


def _ensure_categories(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.executemany(
            "insert into core.categories (slug, name, description) values (%s, %s, %s) "
            "on conflict (slug) do nothing",
            CATEGORIES,
        )
        rows = cur.execute("select slug, id from core.categories").fetchall()
    return {str(slug): int(str(ident)) for slug, ident in rows}


class NotEmbedded(RuntimeError):
    """The server is not this project's embedded cluster: no demo accounts with published passwords."""


def require_embedded(url: str, force: bool = False) -> None:
    """Refuses a server other than an embedded cluster (which sets `commercecore.embedded`), unless forced.

    The demo users' passwords are printed by `make run` and written in the README: seeded into a shop's
    own database they are an open door, so reaching one by a stray DATABASE_URL must not be enough.
    """
    if force:
        return
    with psycopg.connect(url, connect_timeout=10) as conn:
        row = conn.execute("select current_setting('commercecore.embedded', true)").fetchone()
    if row is None or row[0] != "on":
        raise NotEmbedded(
            "refusing to load demo users with published passwords into a server that is not the embedded "
            "cluster (DATABASE_URL); pass --force if this database is a throwaway one"
        )


def seed_demo(url: str) -> dict[str, int]:
    """Load the demo catalog and users; re-running adds nothing. Returns what was added."""
    hasher = PasswordHasher()
    added = {"products": 0, "users": 0}
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("select set_config('request.id', 'demo-seed', true)")
        categories = _ensure_categories(conn)
        for product in demo_products():
            row = conn.execute(
                """
                insert into core.products (sku, name, description, price_minor, currency, category_id)
                values (%s, %s, %s, %s, 'EUR', %s)
                on conflict (sku) do nothing
                returning id
                """,
                [product.sku, product.name, product.description, product.price_minor,
                 categories[product.category_slug]],
            ).fetchone()  # fmt: skip
            if row is None:
                continue
            added["products"] += 1
            if product.stock:
                conn.execute(
                    "insert into core.inventory_movements (product_id, delta, reason, note) "
                    "values (%s, %s, 'restock', 'demo seed')",
                    [row[0], product.stock],
                )
        for email, password, full_name, role in DEMO_USERS:
            user = conn.execute(
                "insert into core.users (email, full_name, role) values (%s, %s, %s) "
                "on conflict (email) do nothing returning id",
                [email, full_name, role],
            ).fetchone()
            if user is None:
                continue
            conn.execute(
                "insert into auth.credentials (user_id, password_hash) values (%s, %s)",
                [user[0], hasher.hash(password)],
            )
            added["users"] += 1
    return added


def _generated_rows(count: int, first_number: int, category_ids: list[int]) -> Iterator[tuple[object, ...]]:
    rng = random.Random(first_number)  # noqa: S311 - reproducible demo data, not a secret
    slugs = [slug for slug, _name, _description in CATEGORIES]
    for offset in range(count):
        number = first_number + offset
        slug = slugs[number % len(slugs)]
        product = _product(rng, number, slug)
        yield (
            f"GEN-{number:09d}",
            product.name,
            product.description,
            product.price_minor,
            product.stock,
            category_ids[number % len(category_ids)],
        )


def generate_products(
    url: str, count: int, *, batch: int = 50_000, progress: Callable[[int], None] | None = None
) -> int:
    """Bulk-load `count` generated products (skus GEN-…) after the ones already generated; returns count."""
    with psycopg.connect(url) as conn, conn.transaction():
        categories = list(_ensure_categories(conn).values())
        # serialise concurrent generators: each continues the numbering where the previous stopped
        conn.execute("lock table core.products in share row exclusive mode")
        first = conn.execute(
            "select coalesce(max(substr(sku, 5)::bigint), 0) + 1 from core.products where sku like 'GEN-%'"
        ).fetchone()
        assert first is not None
        start = int(first[0])
        # row triggers off for the load: the ledger rows are written below, matching stock exactly
        conn.execute("set local session_replication_role = replica")
        done = 0
        while done < count:
            size = min(batch, count - done)
            with conn.cursor().copy(
                "copy core.products (sku, name, description, price_minor, stock, category_id) from stdin"
            ) as copy:
                for row in _generated_rows(size, start + done, categories):
                    copy.write_row(row)
            done += size
            if progress:
                progress(size)
        conn.execute(
            """
            insert into core.inventory_movements (product_id, delta, reason, note)
            select id, stock, 'restock', 'generated catalog'
            from core.products
            where sku >= %s and sku like 'GEN-%%' and stock > 0
            """,
            [f"GEN-{start:09d}"],
        )
        conn.execute("set local session_replication_role = origin")
        conn.execute(
            """
            insert into audit.log_entries (actor_role, request_id, table_name, operation, row_id, new_row)
            values (session_user, 'demo-generate', 'core.products', 'INSERT', 'bulk',
                    jsonb_build_object('generated', %s::int, 'first_sku', %s::text))
            """,
            [count, f"GEN-{start:09d}"],
        )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("analyze core.products")
        conn.execute("analyze core.inventory_movements")
    return count
