"""Per-provider rate limits: a token bucket shared by every worker, so a burst
of sends never exceeds what the provider account allows.

A bucket holds at most one second's worth of tokens (`rate`, at least one)
and refills continuously at `rate` per second; a send takes one token. A
worker asks for as many tokens as it has messages waiting and gets what the
bucket holds (maybe none) and, when short, how long until the next token.

Two implementations with the same behaviour:
- Redis (when the cache is Redis, as in production): the bucket is a hash
  updated by one Lua script, atomic on the server and timed by the server's
  clock, so workers on many machines share it exactly.
- The embedded default (no Redis): the bucket is a small file under
  `DATA_DIR/ratelimit/`, read and written under an exclusive `flock`. Exact
  across the processes of one machine, which is all the embedded default
  (the embedded PostgreSQL, the filesystem broker) runs on.
"""

import fcntl
import json
import math
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import redis
from django.conf import settings

KEY_PREFIX = "tenure:ratelimit:"


@dataclass(frozen=True)
class Grant:
    granted: int  # tokens taken (sends allowed now)
    wait: float  # when short: seconds until the next token; else 0


# KEYS[1]: the bucket. ARGV: rate per second, capacity, tokens wanted.
# Returns {granted, wait in microseconds} (Lua numbers come back as integers).
TAKE_LUA = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
if now > at then
  tokens = math.min(capacity, tokens + (now - at) * rate)
end
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
local wait = 0
if granted < want then
  wait = math.ceil((1 - tokens) / rate * 1000000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return {granted, wait}
"""


def capacity(rate: float) -> float:
    return max(1.0, rate)


class RedisBuckets:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.script = self.client.register_script(TAKE_LUA)

    def take(self, name: str, *, rate: float, want: int) -> Grant:
        granted, wait_us = self.script(
            keys=[KEY_PREFIX + name], args=[repr(rate), repr(capacity(rate)), want]
        )
        return Grant(int(granted), int(wait_us) / 1_000_000)


class FileBuckets:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def take(self, name: str, *, rate: float, want: int) -> Grant:
        full = capacity(rate)
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / f"{name}.json").open("a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
            f.seek(0)
            try:
                state = json.loads(f.read() or "null") or {}
                tokens, at = float(state["tokens"]), float(state["at"])
            except (ValueError, KeyError, TypeError):
                tokens, at = full, None
            now = time.time()
            if at is not None and now > at:
                tokens = min(full, tokens + (now - at) * rate)
            granted = min(want, math.floor(tokens))
            tokens -= granted
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"tokens": tokens, "at": now}))
        wait = (1 - tokens) / rate if granted < want else 0.0
        return Grant(granted, wait)


@cache
def _buckets(kind: str, location: str) -> RedisBuckets | FileBuckets:
    return RedisBuckets(location) if kind == "redis" else FileBuckets(Path(location))


def buckets() -> RedisBuckets | FileBuckets:
    """The Redis buckets when the cache is Redis, else the file buckets."""
    cache_config = settings.CACHES["default"]
    if cache_config["BACKEND"].endswith(".RedisCache"):
        location = cache_config["LOCATION"]
        return _buckets("redis", location if isinstance(location, str) else location[0])
    return _buckets("file", str(settings.DATA_DIR / "ratelimit"))


def take(name: str, *, rate: float, want: int) -> Grant:
    """Up to `want` tokens from `name`'s bucket (refilling at `rate` per
    second). A rate of 0 means no limit: everything is granted."""
    if want <= 0:
        return Grant(0, 0.0)
    if rate <= 0:
        return Grant(want, 0.0)
    return buckets().take(name, rate=rate, want=want)
