-- Deploy commercecore:procedures/catalog/categories to pg
-- requires: schema/catalog
-- requires: procedures/guards
-- Staff's categories: POST /categories and PATCH /categories/{id}, their fields checked in one place. A
-- category may be nested under another (parent_id), never under itself or one of its own subcategories.
begin;

set local role app_owner;

create or replace function core.category_json(c core.categories) returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'id', c.id,
    'slug', c.slug,
    'name', c.name,
    'description', c.description,
    'parent_id', c.parent_id,
    'created_at', c.created_at,
    'updated_at', c.updated_at
  )
$$;

comment on function core.category_json(core.categories) is
'The category shape of the API: {id, slug, name, description, parent_id, created_at, updated_at}, as
api.categories shows it.';

create or replace function core.check_category_fields(slug text, name text, description text, parent_id bigint)
returns void
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  bad text;
  complaint text;
  rule jsonb := '{}';
begin
  -- the first field that is wrong, in argument order; null means "not given" and is checked by the callers
  if check_category_fields.slug !~ '^[a-z0-9]+(-[a-z0-9]+)*$' or pg_catalog.length(check_category_fields.slug) > 80 then
    bad := 'slug';
    complaint := 'slug must be 1 to 80 lower-case letters and digits in words joined by single dashes.';
    rule := pg_catalog.jsonb_build_object('pattern', '^[a-z0-9]+(-[a-z0-9]+)*$', 'max_length', 80);
  elsif pg_catalog.length(check_category_fields.name) not between 1 and 120 then
    bad := 'name';
    complaint := 'name must be 1 to 120 characters.';
    rule := pg_catalog.jsonb_build_object('min_length', 1, 'max_length', 120);
  elsif pg_catalog.length(check_category_fields.description) > 5000 then
    bad := 'description';
    complaint := 'description must be at most 5000 characters.';
    rule := pg_catalog.jsonb_build_object('max_length', 5000);
  elsif check_category_fields.parent_id is not null
    and not exists (select from core.categories as c where c.id = check_category_fields.parent_id) then
    bad := 'parent_id';
    complaint := 'There is no category with this id to nest under.';
    rule := pg_catalog.jsonb_build_object('value', check_category_fields.parent_id);
  end if;
  if bad is not null then
    perform core.raise_invalid(bad, complaint, rule, 'Correct the field and send the request again.');
  end if;
end;
$$;

comment on function core.check_category_fields(text, text, text, bigint) is
'Raises PT422 invalid_input naming the first invalid category field among those given (nulls are skipped),
with the rule it breaks in details: slug (pattern, max_length 80), name (1 to 120 characters), description
(at most 5000), parent_id (an existing category).';

create or replace function core.raise_duplicate_slug(slug text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform core.raise_error(
    '409', 'duplicate_slug', 'Another category already has this slug.',
    pg_catalog.jsonb_build_object('field', 'slug', 'slug', raise_duplicate_slug.slug),
    'Choose another slug, or change the existing category with PATCH /categories/{id}.'
  );
end;
$$;

comment on function core.raise_duplicate_slug(text) is 'Raises PT409 duplicate_slug for a category slug in use.';

create or replace function api.create_category(
  slug text, name text, description text default '', parent_id bigint default null
)
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  created core.categories;
begin
  perform core.require_staff();
  if create_category.slug is null or create_category.name is null then
    perform core.raise_invalid(
      case when create_category.slug is null then 'slug' else 'name' end, 'slug and name are required.',
      hint => 'Send both fields with a value.'
    );
  end if;
  perform core.check_category_fields(
    create_category.slug, create_category.name, create_category.description, create_category.parent_id
  );
  begin
    insert into core.categories (slug, name, description, parent_id)
    values (
      create_category.slug, create_category.name, coalesce(create_category.description, ''),
      create_category.parent_id
    )
    returning * into created;
  exception when unique_violation then
    perform core.raise_duplicate_slug(create_category.slug);
  end;
  perform pg_catalog.set_config('response.status', '201', true);
  perform pg_catalog.set_config(
    'response.headers',
    pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('Location', '/categories?id=eq.' || created.id))::text,
    true
  );
  return core.category_json(created);
end;
$$;

comment on function api.create_category(text, text, text, bigint) is
'Staff: adds a category and returns it (201, Location /categories?id=eq.{id}). slug: unique, 1 to 80
lower-case letters and digits in words joined by dashes (shoes, running-shoes); name: 1 to 120 characters;
description: at most 5000; parent_id: the category to nest it under (none: top level).
Errors: 401 unauthenticated, 403 forbidden (customers); 409 duplicate_slug; 422 invalid_input naming the
field, with its rule in details.
@route POST /categories';

grant execute on function api.create_category(text, text, text, bigint) to app_admin;

create or replace function core.check_category_parent(category_id bigint, parent_id bigint) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- one move of the tree at a time: two concurrent moves could otherwise each close half of a cycle
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('core.categories.parent_id', 0));
  if exists (
    with recursive ancestors (id, parent_id) as (
      select c.id, c.parent_id from core.categories as c where c.id = check_category_parent.parent_id
      union
      select c.id, c.parent_id from core.categories as c join ancestors as a on c.id = a.parent_id
    )
    select from ancestors as a where a.id = check_category_parent.category_id
  ) then
    perform core.raise_invalid(
      'parent_id', 'A category cannot be nested under itself or one of its own subcategories.',
      pg_catalog.jsonb_build_object('reason', 'cycle', 'value', check_category_parent.parent_id),
      'Choose a parent outside this category''s subtree.'
    );
  end if;
end;
$$;

comment on function core.check_category_parent(bigint, bigint) is
'Raises PT422 invalid_input (field parent_id, reason cycle) when parent_id is the category itself or one of
its subcategories. Takes the transaction lock of tree moves first, so concurrent moves cannot close a cycle.';

create or replace function api.update_category(
  id bigint,
  slug text default null,
  name text default null,
  description text default null,
  parent_id bigint default null,
  unset text[] default null
)
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  unknown text;
  updated core.categories;
begin
  perform core.require_staff();
  select u.field into unknown
  from pg_catalog.unnest(update_category.unset) as u (field)
  where u.field is null or u.field <> 'parent_id'
  limit 1;
  if found then
    perform core.raise_invalid(
      'unset', 'unset may only name parent_id.', pg_catalog.jsonb_build_object('value', unknown, 'allowed', '["parent_id"]'::jsonb),
      'The other fields cannot be null; give them a value instead.'
    );
  end if;
  if update_category.parent_id is not null and 'parent_id' = any(update_category.unset) then
    perform core.raise_invalid(
      'unset', 'A field cannot be both given and unset.', hint => 'Either give parent_id or name it in unset.'
    );
  end if;
  perform core.check_category_fields(
    update_category.slug, update_category.name, update_category.description, update_category.parent_id
  );
  perform from core.categories as c where c.id = update_category.id for update;
  if not found then
    perform core.raise_not_found('category', update_category.id, 'List the categories with GET /categories.');
  end if;
  if update_category.parent_id is not null then
    perform core.check_category_parent(update_category.id, update_category.parent_id);
  end if;
  begin
    update core.categories as c set
      slug = coalesce(update_category.slug, c.slug),
      name = coalesce(update_category.name, c.name),
      description = coalesce(update_category.description, c.description),
      parent_id = case
        when 'parent_id' = any(update_category.unset) then null
        else coalesce(update_category.parent_id, c.parent_id)
      end
    where c.id = update_category.id
    returning * into updated;
  exception when unique_violation then
    perform core.raise_duplicate_slug(update_category.slug);
  end;
  return core.category_json(updated);
end;
$$;

comment on function api.update_category(bigint, text, text, text, bigint, text[]) is
'Staff: changes the given fields of a category and returns it; fields left out (or null) keep their value.
To make it a top-level category, name parent_id in unset ({"unset": ["parent_id"]}). The fields follow the
rules of POST /categories; a category cannot be nested under itself or one of its subcategories.
Errors: 401 unauthenticated, 403 forbidden (customers); 404 not_found; 409 duplicate_slug; 422
invalid_input naming the field, with its rule in details.
@route PATCH /categories/{id}';

grant execute on function api.update_category(bigint, text, text, text, bigint, text[]) to app_admin;

commit;
