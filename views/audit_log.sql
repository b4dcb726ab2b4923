-- Deploy commercecore:views/audit_log to pg
-- requires: schema/audit
-- requires: views/payments_safe
-- audit.log: the audit trail as its readers see it. The owner (app_owner, and superusers) reads the rows of
-- audit.log_entries in full; anyone else (app_dba) with emails and Stripe ids masked as v_payments_safe masks
-- them (core.mask_email, core.mask_provider_id), in the old and new rows.
begin;

set local role app_owner;

create function audit.mask_row(data jsonb) returns jsonb
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

-- no security_barrier: the view filters no rows (nothing to leak through a caller's WHERE), and a caller's
-- conditions on the plain columns (table_name, request_id, at) then reach the table's indexes, with the masks
-- computed only for the rows returned
create view audit.log as
select
  e.id,
  e.at,
  e.actor_user_id,
  e.actor_role,
  e.request_id,
  e.table_name,
  e.operation,
  e.row_id,
  -- who reads: asked once per query (an uncorrelated subquery); the view reads the table with its owner's
  -- rights, but current_user is the reader
  case
    when (select pg_catalog.pg_has_role('app_owner', 'usage')) then e.old_row else audit.mask_row(e.old_row)
  end as old_row,
  case
    when (select pg_catalog.pg_has_role('app_owner', 'usage')) then e.new_row else audit.mask_row(e.new_row)
  end as new_row,
  e.transaction_id,
  -- from the rows in full: two emails can mask alike and still differ
  case
    when e.operation = 'UPDATE'
      then
        array(
          select n.key from pg_catalog.jsonb_each(e.new_row) as n
          where n.value is distinct from e.old_row -> n.key
          order by n.key
        )
  end as changed_columns
from audit.log_entries as e;

comment on view audit.log is
'The audit trail: every change to users, products, orders and payments, with actor, request id, old and new
rows. The owner (app_owner, superusers) reads the rows in full; app_dba with emails and Stripe ids masked
(audit.mask_row).';
comment on column audit.log.old_row is 'The row before the change (UPDATE, DELETE); masked unless the reader is the owner.';
comment on column audit.log.new_row is 'The row after the change (INSERT, UPDATE); masked unless the reader is the owner.';
comment on column audit.log.changed_columns is 'For an UPDATE, the fields whose values changed (compared in full).';
comment on column audit.log.actor_user_id is 'The JWT `sub` of the request that made the change (null for jobs and DBAs).';
comment on column audit.log.request_id is 'The gateway''s X-Request-Id: the same id is in the access log.';

-- the view calls the mask as its reader
grant execute on function audit.mask_row(jsonb) to app_dba;
grant select on audit.log to app_dba;

commit;
