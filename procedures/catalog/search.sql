-- Deploy commercecore:procedures/catalog/search to pg
-- requires: schema/catalog
-- requires: procedures/errors
-- requires: schema/stock_shards
-- Ranked full-text search over the active catalog, with the storefront's filters. A product's stock is its
-- units on hand: in flash-sale mode the sum of its shards.
begin;

set local role app_owner;

create or replace function api.search_products(
  q text default null,
  category bigint default null,
  min_price bigint default null,
  max_price bigint default null,
  in_stock boolean default null,
  "limit" integer default 20,
  "offset" integer default 0
)
returns table (
  id bigint,
  sku text,
  name text,
  description text,
  price_minor bigint,
  currency text,
  stock integer,
  category_id bigint,
  created_at timestamptz,
  updated_at timestamptz,
  rank real
)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  max_limit constant integer := 100;
  max_offset constant integer := 10000;
  words text := nullif(btrim(search_products.q), '');
  ts_query tsquery;
  category_ids bigint[];
  statement text;
  on_hand constant text := '(case when p.stock_shards = 1 then p.stock else (select coalesce(sum(s.units), 0)::integer'
    || ' from core.stock_shards as s where s.product_id = p.id) end)';
begin
  if words is not null and length(words) > 256 then
    perform core.raise_invalid(
      'q', 'q is too long.',
      jsonb_build_object('max_length', 256), 'Search with at most 256 characters.'
    );
  end if;
  if search_products."limit" is null or search_products."limit" not between 1 and max_limit then
    perform core.raise_invalid(
      'limit', format('limit must be between 1 and %s.', max_limit),
      jsonb_build_object('min', 1, 'max', max_limit), 'Page through longer result lists with offset.'
    );
  end if;
  if search_products."offset" is null or search_products."offset" not between 0 and max_offset then
    perform core.raise_invalid(
      'offset', format('offset must be between 0 and %s.', max_offset),
      jsonb_build_object('min', 0, 'max', max_offset),
      'Narrow the search with q or the filters instead of paging deeper.'
    );
  end if;
  if search_products.min_price < 0 then
    perform core.raise_invalid(
      'min_price', 'min_price must not be negative.',
      jsonb_build_object('min', 0), 'Prices are in minor units (cents), zero or more.'
    );
  end if;
  if search_products.max_price < 0 then
    perform core.raise_invalid(
      'max_price', 'max_price must not be negative.',
      jsonb_build_object('min', 0), 'Prices are in minor units (cents), zero or more.'
    );
  end if;
  if search_products.max_price < search_products.min_price then
    perform core.raise_invalid(
      'max_price', 'max_price must not be less than min_price.',
      jsonb_build_object('min_price', search_products.min_price), 'Swap the bounds.'
    );
  end if;

  if words is not null then
    ts_query := websearch_to_tsquery('english', words);
    -- only stop words (or punctuation): there is nothing to match, so nothing matches
    if numnode(ts_query) = 0 then
      return;
    end if;
  end if;

  if search_products.category is not null then
    -- a category includes its subcategories
    with recursive tree as (
      select c.id from core.categories as c where c.id = search_products.category
      union
      select c.id from core.categories as c join tree as t on c.parent_id = t.id
    )
    select array_agg(tree.id) into category_ids from tree;
    if category_ids is null then
      return;
    end if;
  end if;

  -- only the filters that were given are in the statement, so each search is planned for its own filters
  -- (partial indexes on active products: search GIN, (category_id, id), (price_minor, id), (id));
  -- the fragments are constants and every value is a parameter
  statement := 'select p.id, p.sku, p.name, p.description, p.price_minor, p.currency, ' || on_hand || ','
    || ' p.category_id, p.created_at, p.updated_at,'
    || case when ts_query is null then ' null::real' else ' ts_rank_cd(p.search, $1)' end
    || ' as match_rank from core.products as p where p.active'
    || case when ts_query is null then '' else ' and p.search @@ $1' end
    || case when category_ids is null then '' else ' and p.category_id = any($2)' end
    || case when search_products.min_price is null then '' else ' and p.price_minor >= $3' end
    || case when search_products.max_price is null then '' else ' and p.price_minor <= $4' end
    || case search_products.in_stock when true then ' and ' || on_hand || ' > 0' when false then ' and ' || on_hand || ' = 0' else '' end
    || case when ts_query is null then ' order by p.id' else ' order by match_rank desc, p.id' end
    || ' limit $5 offset $6';
  return query execute statement
  using ts_query, category_ids, search_products.min_price, search_products.max_price,
  search_products."limit", search_products."offset";
end;
$$;

comment on function api.search_products(text, bigint, bigint, bigint, boolean, integer, integer) is
'Searches the active catalog. q is web-search syntax (`red shoes`, `"exact phrase"`, `-excluded`, `or`),
matched in English against name and sku (weighted high) and description; results are ranked by ts_rank_cd,
best first, ties by id. Without q, products come in id order and rank is null; a q of only stop words
matches nothing. Filters: category (includes its subcategories), min_price and max_price (minor units,
inclusive), in_stock (true: stock > 0, false: stock = 0). limit 1..100 (default 20), offset 0..10000.
Returns the product rows with their rank, as a JSON array over HTTP; order= (at most limit rows) takes the
columns below.
Errors: 422 invalid_input naming the field (q, limit, offset, min_price, max_price).
@order id, name, price_minor, created_at, rank';

grant execute on function api.search_products(text, bigint, bigint, bigint, boolean, integer, integer)
to app_readonly, app_readwrite, app_admin;

commit;
