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


# -- the status list (draft-ietf-oauth-status-list) ------------------------------------------
# Its keys carry their own hash tag (ARGV[1], e.g. "{jws:sl}"): one slot for the bitmap and
# everything a claim or a mark touches. The bitmap is stored so that GET returns the draft's
# byte array as is: index i is Redis bit (i - i % 8) + 7 - i % 8 (SETBIT counts from the
# most significant bit of each byte, the draft from the least). Slot records are JSON with
# string values (exact doubles for Lua's tonumber), "" for an absent sid or kid.
_STATUS_LUA = """
local tag = ARGV[1]
local slots, bits, ver = tag .. ':slot', tag .. ':bits', tag .. ':ver'
local function setbit(idx, value)
  local i = tonumber(idx)
  return redis.call('SETBIT', bits, i - i % 8 + 7 - i % 8, value)
end
local function group(kind, value) return tag .. ':g:' .. kind .. ':' .. value end
local KINDS = {'jti', 'sid', 'sub', 'kid'}
"""

# ARGV: tag, holder JSON, now, margin (s), then candidate indices.
# The index the same jti holds, else the first free candidate; false when all are taken.
STATUS_CLAIM = (
    _STATUS_LUA
    + """
local h = cjson.decode(ARGV[2])
local now, margin = tonumber(ARGV[3]), tonumber(ARGV[4])
for _, idx in ipairs(redis.call('ZRANGEBYSCORE', group('jti', h.jti), '(' .. ARGV[3], '+inf')) do
  local rec = redis.call('HGET', slots, idx)
  if rec and cjson.decode(rec).jti == h.jti then return tonumber(idx) end
end
for i = 5, #ARGV do
  local idx = ARGV[i]
  local rec = redis.call('HGET', slots, idx)
  local old = rec and cjson.decode(rec)
  if not old or tonumber(old.u) <= now then
    if old then
      for _, kind in ipairs(KINDS) do
        if old[kind] ~= '' then redis.call('ZREM', group(kind, old[kind]), idx) end
      end
    end
    redis.call('ZREM', tag .. ':ends', idx)
    local born = 0
    for _, kind in ipairs(KINDS) do
      if h[kind] ~= '' then
        local mark = redis.call('GET', tag .. ':m:' .. kind .. ':' .. h[kind])
        if mark then
          local u, a = string.match(mark, '^(%S+) ?(.*)$')
          if tonumber(u) > now and (kind ~= 'sub' or tonumber(h.i) <= tonumber(a)) then born = 1 end
        end
      end
    end
    redis.call('HSET', slots, idx, ARGV[2])
    local ms = math.floor((tonumber(h.u) + margin) * 1000)
    for _, kind in ipairs(KINDS) do
      if h[kind] ~= '' then
        local g = group(kind, h[kind])
        redis.call('ZREMRANGEBYSCORE', g, '-inf', ARGV[3])
        redis.call('ZADD', g, h.u, idx)
        if redis.call('PEXPIRETIME', g) < ms then redis.call('PEXPIREAT', g, ms) end
      end
    end
    redis.call('ZADD', tag .. ':exp', h.u, idx)
    if h.e ~= '' then redis.call('ZADD', tag .. ':ends', h.e, idx) end
    if setbit(idx, born) ~= born then redis.call('INCR', ver) end
    return tonumber(idx)
  end
end
return false
"""
)

# ARGV: tag, kind, value, at ("" unless kind is sub), until (s), now, margin (s), offset,
# batch. Remembers the mark until `until` and sets the bits of the live tokens kind=value
# names, `batch` of them per call from `offset` on, highest `until` first; answers
# {bits changed, next offset or -1}. A key's revocation may cover every live token: in
# batches, Redis serves other clients in between. Walking down from the highest score is
# safe while the group changes: members are removed only at the low end (expired), and a
# member added meanwhile was born INVALID by the mark (visited twice at worst, never skipped).
STATUS_MARK = (
    _STATUS_LUA
    + """
local kind, value, at, now = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[6])
local mk = tag .. ':m:' .. kind .. ':' .. value
local ms = math.floor((tonumber(ARGV[5]) + tonumber(ARGV[7])) * 1000)
local untl = ARGV[5]
local old = redis.call('GET', mk)
if old then
  local u, a = string.match(old, '^(%S+) ?(.*)$')
  if tonumber(u) > now then
    if a ~= '' and at ~= '' and tonumber(a) > tonumber(at) then at = a end
    if tonumber(u) > tonumber(untl) then untl = u end
  end
end
local expires = redis.call('PEXPIRETIME', mk)
if expires > ms then ms = expires end
-- "until at": the app's clock decides when the mark ends; the Redis TTL only cleans up.
redis.call('SET', mk, untl .. ' ' .. at, 'PXAT', string.format('%d', ms))
local changed, offset, batch = 0, tonumber(ARGV[8]), tonumber(ARGV[9])
local members = redis.call('ZREVRANGEBYSCORE', group(kind, value), '+inf', '(' .. ARGV[6], 'LIMIT', offset, batch)
for _, idx in ipairs(members) do
  local rec = redis.call('HGET', slots, idx)
  if rec then
    local h = cjson.decode(rec)
    if tonumber(h.u) > now and h[kind] == value and (kind ~= 'sub' or tonumber(h.i) <= tonumber(at)) then
      if setbit(idx, 1) == 0 then changed = changed + 1 end
    end
  end
end
if changed > 0 then redis.call('INCR', ver) end
return {changed, #members < batch and -1 or offset + batch}
"""
)

# ARGV: tag, now, known version ("" for none). Sets the bits of tokens whose session has
# ended, then answers {version, 1 when the caller's copy is stale}.
STATUS_VERSION = (
    _STATUS_LUA
    + """
local now = tonumber(ARGV[2])
local changed = 0
for _, idx in ipairs(redis.call('ZRANGEBYSCORE', tag .. ':ends', '-inf', ARGV[2])) do
  redis.call('ZREM', tag .. ':ends', idx)
  local rec = redis.call('HGET', slots, idx)
  if rec and tonumber(cjson.decode(rec).u) > now and setbit(idx, 1) == 0 then changed = changed + 1 end
end
if changed > 0 then redis.call('INCR', ver) end
local v = redis.call('GET', ver) or '0'
return {v, v == ARGV[3] and 0 or 1}
"""
)

# ARGV: tag, now, batch size. Forgets the holders of indices whose `until` has passed (their
# bits stay until the index is claimed again: a bit changes only with the version).
STATUS_PURGE = (
    _STATUS_LUA
    + """
local done = redis.call('ZRANGEBYSCORE', tag .. ':exp', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, idx in ipairs(done) do
  local rec = redis.call('HGET', slots, idx)
  if rec then
    local old = cjson.decode(rec)
    if tonumber(old.u) <= tonumber(ARGV[2]) then
      for _, kind in ipairs(KINDS) do
        if old[kind] ~= '' then redis.call('ZREM', group(kind, old[kind]), idx) end
      end
      redis.call('HDEL', slots, idx)
      redis.call('ZREM', tag .. ':ends', idx)
    end
  end
  redis.call('ZREM', tag .. ':exp', idx)
end
return #done
"""
)


ScriptName = t.Literal[
    "revoke",
    "revoke_subject",
    "revoke_family",
    "create_family",
    "persist_rotation",
    "remember_once",
    "purge",
    "purge_once",
    "status_claim",
    "status_mark",
    "status_version",
    "status_purge",
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
    "status_claim": STATUS_CLAIM,
    "status_mark": STATUS_MARK,
    "status_version": STATUS_VERSION,
    "status_purge": STATUS_PURGE,
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
