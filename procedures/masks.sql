-- Deploy commercecore:procedures/masks to pg
-- requires: schema/namespaces
-- Masks for readers who may not see who paid or act on Stripe: provider ids keep their prefix and last 4
-- characters, emails their first letter and domain. The payments report (views/payments_safe) and the audit
-- log (views/audit_log) show their rows through them.
begin;

set local role app_owner;

create or replace function core.mask_provider_id(provider_id text) returns text
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  -- cs_test_a1B2...9f1a2b -> cs_…1a2b: the object type stays readable, the id is not usable
  select case
    when provider_id is null then null
    when pg_catalog.strpos(provider_id, '_') = 0 then '…' || pg_catalog.right(provider_id, least(4, pg_catalog.length(provider_id) / 3))
    when pg_catalog.length(provider_id) <= 8 then pg_catalog.split_part(provider_id, '_', 1) || '_…'
    else pg_catalog.split_part(provider_id, '_', 1) || '_…' || pg_catalog.right(provider_id, 4)
  end
$$;

comment on function core.mask_provider_id(text) is
'Masks a Stripe id for reports: its type prefix and last 4 characters (cs_test_a1b2…1a2b -> cs_…1a2b).';

create or replace function core.mask_email(email text) returns text
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
  -- john@example.com -> j***@example.com
  select case
    when email is null then null
    when pg_catalog.strpos(email, '@') < 2 then '***'
    else pg_catalog.left(email, 1) || '***@' || pg_catalog.split_part(email, '@', 2)
  end
$$;

comment on function core.mask_email(text) is 'Masks an email for reports: the first letter and the domain (j***@example.com).';

create or replace function audit.mask_row(data jsonb) returns jsonb
language plpgsql
immutable
parallel safe
-- the masks are core's, which the readers of audit.log may not execute themselves
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  value text;
  stripe_id text;
begin
  case pg_catalog.jsonb_typeof(mask_row.data)
    when 'object' then
      return (
        select coalesce(
          pg_catalog.jsonb_object_agg(
            e.key,
            case
              when e.key ~ '(^|_)email$' and pg_catalog.jsonb_typeof(e.value) = 'string'
                then pg_catalog.to_jsonb(core.mask_email(e.value #>> '{}'))
              else audit.mask_row(e.value)
            end
          ),
          '{}'::jsonb
        )
        from pg_catalog.jsonb_each(mask_row.data) as e
      );
    when 'array' then
      return (
        select coalesce(pg_catalog.jsonb_agg(audit.mask_row(e.value) order by e.position), '[]'::jsonb)
        from pg_catalog.jsonb_array_elements(mask_row.data) with ordinality as e (value, position)
      );
    when 'string' then
      value := mask_row.data #>> '{}';
      if value ~ '^[^@\s]+@[^@\s]+$' then
        return pg_catalog.to_jsonb(core.mask_email(value));
      end if;
      -- a Stripe id (cs_ checkout session, pi_ payment intent, re_ refund, ch_ charge, evt_ event), whatever
      -- the column: payments.checkout_session_id and payment_intent_id today
      if value ~ '^(cs|pi|re|ch|evt)_[A-Za-z0-9_]+$' then
        return pg_catalog.to_jsonb(core.mask_provider_id(value));
      end if;
      -- and one inside a longer text: the checkout URL ends in its session id
      for stripe_id in
        select m[1] from pg_catalog.regexp_matches(value, '\m((?:cs|pi|re|ch|evt)_[A-Za-z0-9_]{8,})', 'g') as m
      loop
        value := pg_catalog.replace(value, stripe_id, core.mask_provider_id(stripe_id));
      end loop;
      return pg_catalog.to_jsonb(value);
    else
      return mask_row.data;
  end case;
end;
$$;

comment on function audit.mask_row(jsonb) is
'An audited row as app_dba sees it: emails (fields named email or *_email, and any value that is an address)
as core.mask_email masks them (j***@example.com), Stripe ids (cs_, pi_, re_, ch_, evt_; alone or inside a
text such as the checkout URL) as core.mask_provider_id does (pi_…1a2b), everything else as it is.';

-- audit.log calls it as its reader
grant execute on function audit.mask_row(jsonb) to app_dba;

commit;
