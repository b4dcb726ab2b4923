-- The floor of any "take one unit" design: a bare conditional UPDATE of one row, as the superuser, on a
-- scratch copy of the hot product (scratch.products: core.products' columns, constraints and indexes, no
-- triggers, no ledger, no audit).
update scratch.products set stock = stock - 1 where id = :product::bigint and stock >= 1;
