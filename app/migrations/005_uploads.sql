-- Private uploads (issue 15). Expand only: a new table, which releases before this one never
-- read. A row is written when its presigned PUT is handed out (pending) and marked stored once
-- a HEAD found the object with the declared size and type.
create table uploads (
    id           bigserial   primary key,
    user_id      bigint      not null references users (id),
    object_key   text        not null unique,  -- uploads/<user id>/<random uuid>
    file_name    text        not null check (length(file_name) between 1 and 255),
    content_type text        not null,
    size         bigint      not null check (size >= 0),
    status       text        not null default 'pending' check (status in ('pending', 'stored')),
    created_at   timestamptz not null default now(),
    stored_at    timestamptz
);
-- A user's uploads, newest first.
create index uploads_user_id_idx on uploads (user_id, id);
