-- Verify commercecore:schema/updated_at on pg
begin;

-- an update stamps updated_at, whatever the statement set it to
create temporary table verify_stamped (id int, updated_at timestamptz) on commit drop;
create trigger verify_stamped_set_updated_at before update on verify_stamped
for each row execute function core.set_updated_at();
insert into verify_stamped values (1, '2000-01-01');
update verify_stamped set id = 2;
select 1 / (updated_at = now())::int from verify_stamped;

rollback;
