-- Campaigns started through the API and the deliveries the worker makes for them.
create table campaigns (
    id          bigserial primary key,
    name        text        not null check (length(name) between 1 and 200),
    recipients  integer     not null check (recipients between 1 and 100000),
    status      text        not null default 'queued'
                            check (status in ('queued', 'running', 'done', 'failed')),
    sent        integer     not null default 0,
    attempts    integer     not null default 0,
    result      jsonb,
    created_at  timestamptz not null default now(),
    started_at  timestamptz,
    finished_at timestamptz
);

-- One row per recipient; the primary key makes a second run of the same job
-- (after a crash or a hand-back) add nothing.
create table deliveries (
    campaign_id  bigint      not null references campaigns (id) on delete cascade,
    recipient    integer     not null,
    address      text        not null,
    delivered_at timestamptz not null default now(),
    primary key (campaign_id, recipient)
);
