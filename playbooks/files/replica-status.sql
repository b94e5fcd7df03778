SELECT json_build_object(
  'in_recovery', pg_is_in_recovery(),
  'receiver', (
    SELECT json_build_object('status', status, 'slot_name', slot_name, 'sender_host', sender_host)
    FROM pg_stat_wal_receiver),
  'lag_bytes', coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0),
  'lag_seconds', CASE
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
    ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
  END,
  'settings', json_build_object(
    'max_connections', current_setting('max_connections'),
    'shared_buffers', current_setting('shared_buffers')
  )
)
