-- Revert commercecore:procedures/catalog/categories from pg
begin;

drop function api.update_category(bigint, text, text, text, bigint, text[]);
drop function core.check_category_parent(bigint, bigint);
drop function api.create_category(text, text, text, bigint);
drop function core.raise_duplicate_slug(text);
drop function core.check_category_fields(text, text, text, bigint);
drop function core.category_json(core.categories);

commit;
