"""Flash-sale mode over HTTP: staff set stock_shards with PATCH /products/{id} (a value past the limit is a
422 with the limit in details), staff see it on GET /products/{id}, everyone sees the total stock, and an
order of the product answers as any other."""

from __future__ import annotations

import pytest

from gateway.app import create_app
from tests.gateway.conftest import GatewayDb, bearer, make_admin, serve, settings_for, signup
from tests.gateway.test_hoarding import new_product, order


@pytest.mark.anyio
async def test_staff_put_a_product_in_flash_sale_mode(gw_fresh: GatewayDb) -> None:
    product = new_product(gw_fresh, "FLASH-DROP")  # 1000 units
    async with serve(create_app(settings_for(gw_fresh))) as client:
        staff = await signup(client)
        make_admin(gw_fresh, staff["id"])
        staff_auth = await bearer(client, staff["email"])
        buyer = await signup(client)
        buyer_auth = await bearer(client, buyer["email"])

        too_many = await client.patch(f"/products/{product}", json={"stock_shards": 65}, headers=staff_auth)
        assert too_many.status_code == 422, too_many.text
        assert too_many.json()["details"] == {
            "code": "invalid_input",
            "field": "stock_shards",
            "min": 1,
            "max": 64,
            "value": 65,
        }
        refused = await client.patch(f"/products/{product}", json={"stock_shards": 8}, headers=buyer_auth)
        assert refused.status_code == 403, refused.text

        patched = await client.patch(f"/products/{product}", json={"stock_shards": 8}, headers=staff_auth)
        assert patched.status_code == 200, patched.text
        assert (patched.json()["stock"], patched.json()["stock_shards"]) == (1000, 8)
        staff_view = (await client.get(f"/products/{product}", headers=staff_auth)).json()
        assert staff_view["stock_shards"] == 8

        placed = await order(client, buyer_auth, (product, 3))
        assert placed.status_code == 201, placed.text
        assert placed.json()["items"][0]["quantity"] == 3
        public = (await client.get(f"/products/{product}")).json()
        assert public["stock"] == 997
        assert "stock_shards" not in public
        listed = await client.get("/products", params={"id": f"eq.{product}", "select": "id,stock"})
        assert listed.json() == [{"id": product, "stock": 997}]

        off = await client.patch(f"/products/{product}", json={"stock_shards": 1}, headers=staff_auth)
        assert (off.json()["stock"], off.json()["stock_shards"]) == (997, 1)
