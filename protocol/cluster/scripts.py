"""The room's operations as Lua scripts, each atomic in Redis (spec/PROTOCOL.md §18.3).

Redis runs one script at a time, so each script sees the room as no other node can change it
meanwhile: that is what makes a name taken on one node taken on all, and gives every entry its
place in the log. Keys and arguments shared by the proposals (join, say, leave):

- ``KEYS``: 1 epoch, 2 seq, 3 log (a Stream), 4 members (hash: member -> record),
  5 names (hash: ``k:KEY`` and ``s:SKELETON`` -> member), 6 dedup (hash: node -> last proposal),
  7 holders (hash: the members that hold the room's says on their node, §10.1, §18.2).
- ``ARGV``: 1 the epoch the node knows, 2 node id, 3 proposal number, 4 the log's MAXLEN,
  5 the room's key prefix; then the operation's own.

A proposal whose epoch is not the room's answers ``epoch`` (the room was lost, e.g. Redis
restarted without its data); one whose number the node has used answers ``dup`` (it was sent
again after a lost connection, and ran the first time). Every entry carries ``q``, its sequence
number: consecutive, so a node sees a gap in what it reads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_PRELUDE = r"""
local function split(s)
  local out, start = {}, 1
  while true do
    local i = string.find(s, '\0', start, true)
    if not i then out[#out + 1] = string.sub(s, start); return out end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end
local function append(...)
  local seq = redis.call('INCR', KEYS[2])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'q', seq, ...)
  return seq
end
local function fresh()
  if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'epoch' end
  local number = tonumber(ARGV[3])
  local last = tonumber(redis.call('HGET', KEYS[6], ARGV[2]) or '0')
  if number <= last then return 'dup' end
  redis.call('HSET', KEYS[6], ARGV[2], ARGV[3])
  return nil
end
-- The proposal's member (ARGV 6 is its client), or nil if the room no longer has it.
local function present()
  local member = ARGV[2] .. ':' .. ARGV[6]
  if redis.call('HEXISTS', KEYS[4], member) == 0 then return nil end
  return member
end
-- A member's record: join seq, name, host, key, skeleton, joined by NUL (no name holds one, §6.1).
local function remove(member, reason)
  local record = redis.call('HGET', KEYS[4], member)
  if not record then return nil end
  local f = split(record)
  redis.call('HDEL', KEYS[5], 'k:' .. f[4], 's:' .. f[5])
  redis.call('HDEL', KEYS[4], member)
  redis.call('HDEL', KEYS[7], member)
  return append('k', 'l', 'm', member, 'r', reason, 'c', redis.call('HLEN', KEYS[4]))
end
"""

#: ARGV 6 client, 7 name, 8 host, 9 key, 10 skeleton. A taken name is an entry too (``x``), so
#: that the proposer learns every outcome from the log, even after losing the reply.
JOIN = (
    _PRELUDE
    + r"""
local stale = fresh()
if stale then return stale end
local member = ARGV[2] .. ':' .. ARGV[6]
if redis.call('HEXISTS', KEYS[5], 'k:' .. ARGV[9]) == 1 then
  append('k', 'x', 'm', member, 'w', 'key')
  return 'taken'
end
if redis.call('HEXISTS', KEYS[5], 's:' .. ARGV[10]) == 1 then
  append('k', 'x', 'm', member, 'w', 'skeleton')
  return 'taken'
end
redis.call('HSET', KEYS[5], 'k:' .. ARGV[9], member, 's:' .. ARGV[10], member)
local count = redis.call('HLEN', KEYS[4]) + 1
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[4], member, table.concat({seq, ARGV[7], ARGV[8], ARGV[9], ARGV[10]}, '\0'))
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'q', seq, 'k', 'j', 'm', member,
  'n', ARGV[7], 'h', ARGV[8], 'c', count)
return 'ok'
"""
)

#: ARGV 6 client, 7.. the texts of consecutive says, one entry each. A member already removed
#: (its node was declared down) says nothing.
SAY = (
    _PRELUDE
    + r"""
local stale = fresh()
if stale then return stale end
local member = present()
if not member then return 'gone' end
for i = 7, #ARGV do append('k', 's', 'm', member, 't', ARGV[i]) end
return 'ok'
"""
)

#: ARGV 6 client, 7 ``1`` if it started holding the room's says on its node (§10.1), ``0`` once
#: it stopped. An entry (``f``) only when that changes, and none for a member already gone.
FLOW = (
    _PRELUDE
    + r"""
local stale = fresh()
if stale then return stale end
local member = present()
if not member then return 'gone' end
local changed
if ARGV[7] == '1' then
  changed = redis.call('HSETNX', KEYS[7], member, '1')
else
  changed = redis.call('HDEL', KEYS[7], member)
end
if changed == 1 then append('k', 'f', 'm', member, 'on', ARGV[7]) end
return 'ok'
"""
)

#: ARGV 6 client, 7 reason. Nothing if the member is gone already (reaped, or never joined).
LEAVE = (
    _PRELUDE
    + r"""
local stale = fresh()
if stale then return stale end
if remove(ARGV[2] .. ':' .. ARGV[6], ARGV[7]) then return 'ok' end
return 'gone'
"""
)

#: ARGV 6 reason, 7 ``1`` to remove the nodes whatever their leases (a node leaving) or ``0`` to
#: remove only those whose lease has expired, 8.. node ids. Idempotent: a second caller finds
#: nothing to remove. Members go in join order. Returns how many were removed.
REAP = (
    _PRELUDE
    + r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'epoch' end
local removed = 0
for i = 8, #ARGV do
  local node = ARGV[i]
  local lease = ARGV[5] .. 'lease:' .. node
  if ARGV[7] == '1' or redis.call('EXISTS', lease) == 0 then
    redis.call('DEL', lease)
    local all = redis.call('HGETALL', KEYS[4])
    local gone = {}
    local prefix = node .. ':'
    for j = 1, #all, 2 do
      if string.sub(all[j], 1, #prefix) == prefix then
        gone[#gone + 1] = {tonumber(split(all[j + 1])[1]), all[j]}
      end
    end
    table.sort(gone, function(a, b) return a[1] < b[1] end)
    for _, g in ipairs(gone) do
      remove(g[2], ARGV[6])
      removed = removed + 1
    end
    redis.call('HDEL', KEYS[6], node)
  end
end
return removed
"""
)

#: KEYS as above; ARGV 1 an epoch for a room that does not exist yet. Returns the room's epoch,
#: its last sequence number and log id, every member record and the holders, all at
#: one instant: a node that reads the log from that id on misses nothing and repeats nothing.
SNAPSHOT = r"""
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[1])
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
return {epoch, seq, id, redis.call('HGETALL', KEYS[4]), redis.call('HKEYS', KEYS[7])}
"""


@dataclass(frozen=True, slots=True)
class Script:
    """A script's source and the SHA-1 that EVALSHA names it by (Redis computes the same)."""

    name: str
    source: bytes

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source, usedforsecurity=False).hexdigest()


SCRIPTS: dict[str, Script] = {
    name: Script(name, source.encode())
    for name, source in (
        ("join", JOIN),
        ("say", SAY),
        ("flow", FLOW),
        ("leave", LEAVE),
        ("reap", REAP),
        ("snapshot", SNAPSHOT),
    )
}
