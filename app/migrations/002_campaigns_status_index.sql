-- Operators list what is still in flight; keep that cheap as campaigns accumulate.
create index campaigns_unfinished_idx on campaigns (created_at) where status in ('queued', 'running');
