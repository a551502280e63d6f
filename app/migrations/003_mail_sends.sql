-- Campaign mail (issue 15): one row per recipient, claimed before its message is handed to
-- the SMTP server and marked once the server accepted it, so no restart sends a recipient
-- twice. Expand only: a new table and a nullable column; an older worker ignores both.
--   claimed  this worker will send it; not handed to SMTP yet (another may take it over)
--   sending  handed to SMTP, outcome not recorded yet (sent again only once stale)
--   retry    the server refused for now (4xx) or the connection failed: not sent
--   sent     the server accepted it (its deliveries row exists)
--   failed   the server refused this recipient for good (5xx)
create table mail_sends (
    campaign_id   bigint      not null references campaigns (id) on delete cascade,
    recipient     integer     not null,
    address       text        not null,
    message_id    text        not null,
    state         text        not null default 'claimed'
                              check (state in ('claimed', 'sending', 'retry', 'sent', 'failed')),
    holder        text        not null,
    tries         integer     not null default 0,
    claimed_at    timestamptz not null default now(),
    sending_at    timestamptz,
    sent_at       timestamptz,
    smtp_response text,
    last_error    text,
    primary key (campaign_id, recipient)
);
-- What is not finished yet, found without reading a campaign's sent rows.
create index mail_sends_open_idx on mail_sends (campaign_id, recipient)
    where state in ('claimed', 'sending', 'retry');

-- The Message-ID a delivery was sent with (null: simulated, or sent by an older release).
alter table deliveries add column message_id text;
