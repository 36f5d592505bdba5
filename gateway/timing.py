"""Every interval and timeout the gateway runs on, in one place (seconds). Each bound a user
can observe is documented where it shows (docs/ named beside it)."""

# main process
REAP_INTERVAL = 0.25           # a sandbox outlives its deadline by at most this (+ teardown)
ACTIVITY_SAVE_EVERY = 30.0     # a sandbox's last activity is written to its record at most
                               # this often (a restart resumes its idle timer from there)
DRAIN_TIMEOUT = 3.0            # a deleted sandbox's connections get this long to close
READY_WAIT = 10.0              # a create waits this long for every proxy worker, then 503
POLICY_RELOAD_INTERVAL = 0.5   # policy files checked for changes (docs/POLICY.md)
POLICY_SYNC_INTERVAL = 1.0     # shared policy revisions pulled (docs/DEPLOY.md)
HEAD_SIGNING_INTERVAL = 10.0   # signed audit chain heads in the database (docs/AUDIT.md)
HEAD_EXPORT_INTERVAL = 1.0     # chain heads to the heads file and OTLP (docs/AUDIT.md)
RETENTION_INTERVAL = 3600.0    # audit retention runs
WARM_RETRY = 5.0               # after a warm sandbox failed to start
GIL_SWITCH_INTERVAL = 0.0005   # workers' questions wait on the main loop while the audit
                               # thread holds the GIL; Python's default is 5 ms

# proxy workers
ACK_TIMEOUT = 5.0              # a worker that does not acknowledge a registry change is killed
ACTIVE_EVERY = 1.0             # how often a busy sandbox's activity is reported
RESTART_CHECK = 0.2            # between looks for a dead worker
QUICK_DEATH = 10.0             # a worker that dies sooner than this after its start backs off
MAX_BACKOFF = 30.0             # ... doubling from 1 s up to this

# DNS, CLI
DNS_TCP_IDLE = 10.0            # a DNS-over-TCP connection may wait this long between queries
DNS_QUERIES_PER_SECOND = 500   # answered at once per sandbox; more are held (docs/AUDIT.md)
DNS_BURST = 500                # ... after a quiet spell, this many at once
DNS_HELD = 256                 # queries held per sandbox; beyond, dropped and counted
DNS_TICK = 0.005               # held queries are answered this often
DNS_SUMMARY_INTERVAL = 1.0     # dropped_by_throttle rows written this often
START_TIMEOUT = 60.0           # `sandgate run` waits this long for a gateway it started
