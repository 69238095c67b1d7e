"""gRPC options that make a dead or hung peer visible quickly and a returning one usable at once.

The decode worker's channel pings an idle connection (keepalive) and drops it when a ping goes
unanswered, and retries a lost connection after at most MAX_RECONNECT_BACKOFF_MS instead of
gRPC's default of two minutes; the prefill server accepts those pings. Both also carry the message
size limits of kv.frames.GRPC_OPTIONS. The channel balances round-robin over every address its target
resolves to (the operator's headless `<name>-kv` Service: one per ready prefill pod); gRPC's default,
pick_first, would pin each decode worker to one prefill replica. Each channel keeps its own
subchannels (`grpc.use_local_subchannel_pool`): gRPC otherwise shares one connection per address
across the process's channels, so a new client of a restarted prefill worker (same host and port)
inherited the dead server's failed connection and its backoff, and failed its first calls with
"connection refused" while the new server was already listening.
"""

from __future__ import annotations

from hybrid_workers.kv.frames import GRPC_OPTIONS

KEEPALIVE_TIME_MS = 10_000  # ping an idle connection this often
KEEPALIVE_TIMEOUT_MS = 5_000  # a ping unanswered this long drops the connection
INITIAL_RECONNECT_BACKOFF_MS = 100
MAX_RECONNECT_BACKOFF_MS = 1_000  # a returning peer is used again within about this long

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    *GRPC_OPTIONS,
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
    ("grpc.min_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
    ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ("grpc.use_local_subchannel_pool", 1),
]

SERVER_OPTIONS: list[tuple[str, int]] = [
    *GRPC_OPTIONS,
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
    ("grpc.http2.max_ping_strikes", 0),
]
