-- Users and the owner of each campaign (issue 15). Expand only: a new table and a nullable
-- column, so a release before this one (which inserts campaigns with no owner) still runs
-- against this schema. Such rows stay ownerless: nobody sees them through the API.
create table users (
    id            bigserial   primary key,
    email         text        not null check (length(email) between 3 and 254),
    password_hash text        not null,  -- bcrypt ($2b$), never the password
    created_at    timestamptz not null default now()
);
-- One account per address, whatever its case.
create unique index users_email_key on users (lower(email));

alter table campaigns add column user_id bigint references users (id);
