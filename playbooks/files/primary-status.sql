SELECT json_build_object(
  'in_recovery', pg_is_in_recovery(),
  'replication', (
    SELECT coalesce(json_agg(json_build_object(
      'application_name', application_name,
      'client_addr', host(client_addr),
      'state', state,
      'sync_state', sync_state,
      'replay_lag_bytes', pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn),
      'replay_lag_seconds', coalesce(extract(epoch FROM replay_lag), 0)
    ) ORDER BY application_name), '[]'::json)
    FROM pg_stat_replication),
  'slots', (
    SELECT coalesce(json_agg(json_build_object(
      'slot_name', slot_name,
      'slot_type', slot_type,
      'active', active,
      'retained_bytes', pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)
    ) ORDER BY slot_name), '[]'::json)
    FROM pg_replication_slots),
  'settings', json_build_object(
    'max_connections', current_setting('max_connections'),
    'shared_buffers', current_setting('shared_buffers'),
    'synchronous_standby_names', current_setting('synchronous_standby_names'),
    'server_version', current_setting('server_version_num')
  )
)
