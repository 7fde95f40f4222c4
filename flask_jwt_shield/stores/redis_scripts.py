"""The Redis store's Lua scripts, and their registration with a client.

Each script is one atomic step on one node: every key a script touches carries the store's
hash tag (see :mod:`.redis`), so standalone Redis and Redis Cluster run them alike. A script
that can revoke a token publishes on the invalidation channel in the same step (see
:mod:`.invalidation`). Rotation persists what
:meth:`~flask_jwt_shield.stores.base.Family.spend` decided; no script restates that rule.
"""

from __future__ import annotations

import typing as t

#: Refresh tokens remembered per family for the "first use" of a reused one.
SPENT_KEPT = 64

REVOKE = """
local old = redis.call('GET', KEYS[1])
if not old or tonumber(ARGV[1]) > tonumber(old) then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
end
redis.call('PUBLISH', ARGV[3], '1')
return 1
"""

# Shared by the scripts that revoke a family: mark it, revoke its sid, drop it from the index.
_REVOKE_FAMILY_LUA = """
local function revoke_family(tag, sid, untl, margin)
  local fam = tag .. ':f:' .. sid
  if redis.call('EXISTS', fam) == 1 then
    redis.call('HSET', fam, 'revoked', '1')
    redis.call('HINCRBY', fam, 'v', 1)
    local sub = redis.call('HGET', fam, 'sub')
    if sub then redis.call('ZREM', tag .. ':fs:' .. sub, sid) end
  end
  local rev = tag .. ':r:s:' .. sid
  local old = redis.call('GET', rev)
  if not old or tonumber(untl) > tonumber(old) then
    local ms = math.floor((tonumber(untl) + tonumber(margin)) * 1000)
    redis.call('SET', rev, untl, 'PXAT', string.format('%d', ms))
  end
end
"""

# KEYS: not-before key, subject index. ARGV: at, until, margin, channel, tag.
# Sets the subject's not-before instant and, in the same step, ends every family of the
# subject created at or before it (Family.ended_by): no rotation commits after this.
REVOKE_SUBJECT = (
    _REVOKE_FAMILY_LUA
    + """
local at, untl = ARGV[1], ARGV[2]
local old = redis.call('GET', KEYS[1])
if old then
  local a, u = string.match(old, '^(%S+) (%S+)$')
  if tonumber(a) > tonumber(at) then at = a end
  if tonumber(u) > tonumber(untl) then untl = u end
end
local ms = math.floor((tonumber(untl) + tonumber(ARGV[3])) * 1000)
redis.call('SET', KEYS[1], at .. ' ' .. untl, 'PXAT', string.format('%d', ms))
for _, sid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', at)) do
  revoke_family(ARGV[5], sid, untl, ARGV[3])
end
redis.call('PUBLISH', ARGV[4], '1')
return 1
"""
)

# Whether a family (its created_at) is ended by its subject's not-before key (KEYS[i]) or a
# revoked key of its refresh token (KEYS[j]) at ``now`` (Family.ended_by, in Lua).
_ENDED_LUA = """
local function ended(created_at, nb_key, kid_key, now)
  local nb = redis.call('GET', nb_key)
  if nb then
    local a, u = string.match(nb, '^(%S+) (%S+)$')
    if tonumber(u) > now and tonumber(created_at) <= tonumber(a) then return true end
  end
  local k = redis.call('GET', kid_key)
  return k ~= false and tonumber(k) > now
end
"""

REVOKE_ONE_FAMILY = (
    _REVOKE_FAMILY_LUA
    + """
revoke_family(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], '1')
return redis.call('HGETALL', KEYS[1])
"""
)

# KEYS: family, subject index, not-before key, revoked-key key. ARGV: tag, sid, created_at,
# expire ms, max_sessions, idle_ttl, until, margin, channel, then the family's field/value
# pairs. A family born before its subject's not-before instant (a login racing "log out
# everywhere") is stored revoked.
CREATE_FAMILY = (
    _REVOKE_FAMILY_LUA
    + _ENDED_LUA
    + """
local tag, sid, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local fields = {}
for i = 10, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], sid)
local expiry = redis.call('PEXPIRETIME', KEYS[2])
if expiry < tonumber(ARGV[4]) then redis.call('PEXPIREAT', KEYS[2], ARGV[4]) end
-- The index holds live families only: anything dead found here is dropped, so it never
-- grows past max_sessions plus the families that died since the last login.
local idle, live = tonumber(ARGV[6]), {}
for _, other in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local f = redis.call('HMGET', tag .. ':f:' .. other, 'revoked', 'expires_at', 'last_used_at')
  if f[1] == '0' and tonumber(f[2]) > now and tonumber(f[3]) + idle > now then
    live[#live + 1] = other
  else
    redis.call('ZREM', KEYS[2], other)
  end
end
local dropped = {}
for i = 1, #live - tonumber(ARGV[5]) do
  revoke_family(tag, live[i], ARGV[7], ARGV[8])
  dropped[#dropped + 1] = live[i]
end
local born_ended = ended(ARGV[3], KEYS[3], KEYS[4], now)
if born_ended then revoke_family(tag, sid, ARGV[7], ARGV[8]) end
if #dropped > 0 or born_ended then redis.call('PUBLISH', ARGV[9], '1') end
return dropped
"""
)

# Persist what Family.spend decided, if nobody wrote the family since it was read, and if
# no revocation of its subject or of the presented token's key came first (then the family
# ends: answer 2, "revoked").
# KEYS: family, spent list, not-before key, revoked-key key. ARGV: tag, sid, version read,
# outcome, until, margin, channel, expire ms, spent entry, number of fields to delete,
# those names, then field/value pairs; the last ARGV is now.
PERSIST_ROTATION = (
    _REVOKE_FAMILY_LUA
    + _ENDED_LUA
    + """
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[3] then return 0 end
local now = tonumber(table.remove(ARGV))
if ended(redis.call('HGET', KEYS[1], 'created_at'), KEYS[3], KEYS[4], now) then
  revoke_family(ARGV[1], ARGV[2], ARGV[5], ARGV[6])
  redis.call('PUBLISH', ARGV[7], '1')
  return 2
end
local outcome = ARGV[4]
if outcome == 'reused' then
  revoke_family(ARGV[1], ARGV[2], ARGV[5], ARGV[6])
  redis.call('PUBLISH', ARGV[7], '1')
  return 1
end
redis.call('HINCRBY', KEYS[1], 'v', 1)
local n = tonumber(ARGV[10])
for i = 11, 10 + n do redis.call('HDEL', KEYS[1], ARGV[i]) end
local fields = {}
for i = 11 + n, #ARGV do fields[#fields + 1] = ARGV[i] end
if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
if outcome == 'rotated' then
  redis.call('LPUSH', KEYS[2], ARGV[9])
  redis.call('LTRIM', KEYS[2], 0, SPENT_LAST)
  redis.call('PEXPIREAT', KEYS[2], ARGV[8])
end
return 1
""".replace("SPENT_LAST", str(SPENT_KEPT - 1))
)

# KEYS: the one-time key. ARGV: until, now, expire ms.
REMEMBER_ONCE = """
local old = redis.call('GET', KEYS[1])
if old and tonumber(old) > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[3])
return 1
"""

# KEYS: a batch of state keys. ARGV: tag, now. Deletes what is over by the app's clock.
PURGE = """
local tag, now, dropped = ARGV[1], tonumber(ARGV[2]), 0
local n = #tag
for _, key in ipairs(KEYS) do
  local kind = string.sub(key, n + 2, n + 3)
  if kind == 'r:' then
    local v = redis.call('GET', key)
    if v and tonumber(v) <= now then redis.call('DEL', key); dropped = dropped + 1 end
  elseif kind == 'nb' then
    local v = redis.call('GET', key)
    if v then
      local a, u = string.match(v, '^(%S+) (%S+)$')
      if tonumber(u) <= now then redis.call('DEL', key); dropped = dropped + 1 end
    end
  elseif kind == 'f:' then
    local f = redis.call('HMGET', key, 'expires_at', 'sub', 'sid')
    if f[1] and tonumber(f[1]) <= now then
      redis.call('DEL', key, tag .. ':sp:' .. f[3])
      if f[2] then redis.call('ZREM', tag .. ':fs:' .. f[2], f[3]) end
      dropped = dropped + 1
    end
  end
end
return dropped
"""

PURGE_ONCE = """
local v = redis.call('GET', KEYS[1])
if v and tonumber(v) <= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]); return 1 end
return 0
"""

# An ordered box: KEYS[1] the order (a sorted set by sequence number), KEYS[2] the items (a
# hash of key -> JSON [until, value]), KEYS[3] the sequence counter; one hash tag, one slot.
# ARGV: key, item, now, max_items, expiry of the three keys (ms). Returns the live items dropped.
BOX_PUT = """
local seq = redis.call('INCR', KEYS[3])
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then redis.call('ZREM', KEYS[1], ARGV[1]) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], seq, ARGV[1])
local now = tonumber(ARGV[3])
while true do
  local first = redis.call('ZRANGE', KEYS[1], 0, 0)
  if #first == 0 then break end
  local item = redis.call('HGET', KEYS[2], first[1])
  if item and tonumber(cjson.decode(item)[1]) > now then break end
  redis.call('ZREM', KEYS[1], first[1])
  redis.call('HDEL', KEYS[2], first[1])
end
local dropped = 0
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if excess > 0 then
  -- Full: expired items further in go first (only then, as it reads the whole box).
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    if tonumber(cjson.decode(all[i + 1])[1]) <= now then
      redis.call('ZREM', KEYS[1], all[i])
      redis.call('HDEL', KEYS[2], all[i])
      excess = excess - 1
    end
  end
end
if excess > 0 then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, excess - 1)
  for _, k in ipairs(oldest) do
    redis.call('ZREM', KEYS[1], k)
    redis.call('HDEL', KEYS[2], k)
    dropped = dropped + 1
  end
end
local wanted = tonumber(ARGV[5]) - math.floor(now * 1000)
for i = 1, 3 do
  local left = redis.call('PTTL', KEYS[i])
  if left >= 0 and left < wanted then redis.call('PEXPIREAT', KEYS[i], ARGV[5])
  elseif left == -1 then redis.call('PEXPIREAT', KEYS[i], ARGV[5]) end
end
return dropped
"""


ScriptName = t.Literal[
    "revoke",
    "revoke_subject",
    "revoke_family",
    "create_family",
    "persist_rotation",
    "remember_once",
    "purge",
    "purge_once",
    "box_put",
]

SOURCES: t.Final[dict[ScriptName, str]] = {
    "revoke": REVOKE,
    "revoke_subject": REVOKE_SUBJECT,
    "revoke_family": REVOKE_ONE_FAMILY,
    "create_family": CREATE_FAMILY,
    "persist_rotation": PERSIST_ROTATION,
    "remember_once": REMEMBER_ONCE,
    "purge": PURGE,
    "purge_once": PURGE_ONCE,
    "box_put": BOX_PUT,
}


class Scripts:
    """The scripts registered with one client, each on its first use (a new client, a new
    :class:`Scripts`: a registered script stays bound to the client it was registered with).

    A registered script runs by ``EVALSHA``; redis-py loads it again (``SCRIPT LOAD``) when
    a server does not know it yet (a restart, ``SCRIPT FLUSH``, a new cluster node).
    """

    def __init__(self) -> None:
        self._registered: dict[ScriptName, t.Any] = {}

    def run(self, client: t.Any, name: ScriptName, keys: list[str], args: list[t.Any]) -> t.Any:
        """Run script ``name`` with ``keys`` and ``args`` on ``client``; its reply."""
        script = self._registered.get(name)
        if script is None:
            script = self._registered[name] = client.register_script(SOURCES[name])
        return script(keys=keys, args=args)
