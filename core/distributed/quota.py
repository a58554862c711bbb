"""The waiting line in Redis, shared by every front-end and worker: limits checked and reserved
in one atomic step, owners taking turns, positions, and cancelling a job that has not started.

Each operation is one Lua script, so Redis runs it without anything in between: two web
processes and the bot submitting at once cannot both take the last place (a read and then a
write could). Celery carries one message per waiting job; the message only says "a job is
waiting", and the worker that receives it takes whichever job's turn it is (`pop`), so owners
take turns across every front-end exactly as in the in-process service.

Keys (prefix statuary:): turns (list of owners, in turn order), q:<owner> (that owner's job
ids, oldest first), waiting / waiting:<owner> (sets: reserved or queued), active:<owner> (set:
waiting or running, for a Quota), hour:<owner>[:guild] (zset of submit times), running (set),
job:<job id> (hash: gid, owner, prompt, state reserved|queued|running, step, total, worker).
"""

from __future__ import annotations

import dataclasses
import json
import time
from core.distributed.broker import PREFIX, key
from core.jobs import LimitReached, Owner, QueueFull, Quota

_RESERVE = """
local P = ARGV[1]
local job, owner, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
local qmax, pmax, amax, hmax = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local hkey = P .. 'hour:' .. ARGV[9]
local waiting = redis.call('SCARD', P .. 'waiting')
if waiting >= qmax then return {1, waiting, 0} end
local mine = redis.call('SCARD', P .. 'waiting:' .. owner)
if mine >= pmax then return {2, mine, 0} end
local active = redis.call('SCARD', P .. 'active:' .. owner)
redis.call('ZREMRANGEBYSCORE', hkey, '-inf', now - 3600)
local hour = redis.call('ZCARD', hkey)
if (amax >= 0 and active >= amax) or (hmax >= 0 and hour >= hmax) then return {3, active, hour} end
redis.call('SADD', P .. 'waiting', job)
redis.call('SADD', P .. 'waiting:' .. owner, job)
redis.call('SADD', P .. 'active:' .. owner, job)
redis.call('ZADD', hkey, now, job)
redis.call('EXPIRE', hkey, 3700)
redis.call('HSET', P .. 'job:' .. job, 'owner', owner, 'owner_json', ARGV[10], 'prompt', ARGV[11],
           'state', 'reserved', 'created', ARGV[4])
return {0, 0, 0}
"""

_ENQUEUE = """
local P = ARGV[1]
local job, owner, gid, front = ARGV[2], ARGV[3], ARGV[4], ARGV[5] == '1'
redis.call('HSET', P .. 'job:' .. job, 'gid', gid, 'state', 'queued', 'step', 0, 'total', 0)
redis.call('SADD', P .. 'waiting', job)
redis.call('SADD', P .. 'waiting:' .. owner, job)
redis.call('SADD', P .. 'active:' .. owner, job)
redis.call('SREM', P .. 'running', job)
redis.call('LREM', P .. 'q:' .. owner, 0, job)
if front then redis.call('LPUSH', P .. 'q:' .. owner, job) else redis.call('RPUSH', P .. 'q:' .. owner, job) end
if not redis.call('LPOS', P .. 'turns', owner) then
  if front then redis.call('LPUSH', P .. 'turns', owner) else redis.call('RPUSH', P .. 'turns', owner) end
end
return 1
"""

_POP = """
local P = ARGV[1]
local n = redis.call('LLEN', P .. 'turns')
for i = 1, n do
  local owner = redis.call('LPOP', P .. 'turns')
  if not owner then return false end
  local job = redis.call('LPOP', P .. 'q:' .. owner)
  if redis.call('LLEN', P .. 'q:' .. owner) > 0 then redis.call('RPUSH', P .. 'turns', owner) end
  if job then
    redis.call('SREM', P .. 'waiting', job)
    redis.call('SREM', P .. 'waiting:' .. owner, job)
    redis.call('SADD', P .. 'running', job)
    redis.call('HSET', P .. 'job:' .. job, 'state', 'running', 'worker', ARGV[2])
    return {job, redis.call('HGET', P .. 'job:' .. job, 'gid') or '', owner}
  end
end
return false
"""

_CANCEL_WAITING = """
local P = ARGV[1]
local job, owner = ARGV[2], ARGV[3]
if redis.call('LREM', P .. 'q:' .. owner, 0, job) == 0 then return 0 end
if redis.call('LLEN', P .. 'q:' .. owner) == 0 then redis.call('LREM', P .. 'turns', 0, owner) end
redis.call('SREM', P .. 'waiting', job)
redis.call('SREM', P .. 'waiting:' .. owner, job)
redis.call('SREM', P .. 'active:' .. owner, job)
redis.call('DEL', P .. 'job:' .. job)
return 1
"""

_RELEASE = """
local P = ARGV[1]
local job, owner = ARGV[2], ARGV[3]
redis.call('LREM', P .. 'q:' .. owner, 0, job)
if redis.call('LLEN', P .. 'q:' .. owner) == 0 then redis.call('LREM', P .. 'turns', 0, owner) end
redis.call('SREM', P .. 'waiting', job)
redis.call('SREM', P .. 'waiting:' .. owner, job)
redis.call('SREM', P .. 'active:' .. owner, job)
redis.call('SREM', P .. 'running', job)
redis.call('DEL', P .. 'job:' .. job)
return 1
"""

_ORDER = """
local P = ARGV[1]
local owners = redis.call('LRANGE', P .. 'turns', 0, -1)
local out = {}
for i, owner in ipairs(owners) do out[i] = redis.call('LRANGE', P .. 'q:' .. owner, 0, -1) end
return {owners, out}
"""


def owner_key(owner: Owner) -> str:
    return f"{owner.source}:{owner.user_id}"


def _hour_key(owner: Owner) -> str:
    return owner_key(owner) + (f":{owner.guild_id}" if owner.guild_id is not None else "")


def _owner_json(owner: Owner) -> str:
    return json.dumps(dataclasses.asdict(owner))


def owner_from_json(text: str | bytes) -> Owner:
    return Owner(**json.loads(text))


class Line:
    """The scripts, registered once on one Redis client."""

    def __init__(self, r):
        self.r = r
        self._reserve = r.register_script(_RESERVE)
        self._enqueue = r.register_script(_ENQUEUE)
        self._pop = r.register_script(_POP)
        self._cancel = r.register_script(_CANCEL_WAITING)
        self._release = r.register_script(_RELEASE)
        self._order = r.register_script(_ORDER)

    def reserve(self, job_id: str, owner: Owner, prompt: str, *, queue_max: int, per_owner: int,
                quota: Quota | None) -> None:
        """Check every limit and take a place in one step; raise QueueFull / LimitReached (the
        in-process service's sentences) and take nothing when a limit is reached."""
        quota = quota or Quota()
        code, a, b = self._reserve(args=[
            PREFIX, job_id, owner_key(owner), time.time(), queue_max, per_owner,
            -1 if quota.max_active is None else quota.max_active,
            -1 if quota.max_per_hour is None else quota.max_per_hour,
            _hour_key(owner), _owner_json(owner), prompt[:200]])
        if code == 1:
            raise QueueFull(f"The queue is full ({a} jobs waiting, the limit is {queue_max}). Try again in a minute.")
        if code == 2:
            raise QueueFull(f"You already have {a} jobs waiting (the limit per person is {per_owner}). "
                            "Wait for one to finish or cancel one.")
        if code == 3:
            raise LimitReached(quota.refusal(int(a), int(b)) or "This server's limit is reached.")

    def enqueue(self, job_id: str, owner: Owner | str, generation_id: str, *, front: bool = False) -> None:
        """The reserved job joins its owner's line (a dead worker's job: at the front)."""
        ok = owner if isinstance(owner, str) else owner_key(owner)
        self._enqueue(args=[PREFIX, job_id, ok, generation_id, "1" if front else "0"])

    def pop(self, worker: str) -> tuple[str, str, str] | None:
        """The job whose turn it is, moved to running: (job id, generation id, owner key)."""
        got = self._pop(args=[PREFIX, worker])
        return None if not got else tuple(x.decode() if isinstance(x, bytes) else x for x in got)

    def cancel_waiting(self, job_id: str, owner: Owner | str) -> bool:
        """Take a job out of the line before it starts; False when it is not waiting."""
        ok = owner if isinstance(owner, str) else owner_key(owner)
        return bool(self._cancel(args=[PREFIX, job_id, ok]))

    def release(self, job_id: str, owner: Owner | str) -> None:
        """The job ended (or never got queued): it holds no place and counts for no limit now."""
        ok = owner if isinstance(owner, str) else owner_key(owner)
        self._release(args=[PREFIX, job_id, ok])

    def order(self) -> list[str]:
        """Waiting job ids in the order they will run: owners take turns, each in submission order."""
        owners, queues = self._order(args=[PREFIX])
        queues = [[j.decode() for j in q] for q in queues]
        out: list[str] = []
        for rank in range(max((len(q) for q in queues), default=0)):
            out.extend(q[rank] for q in queues if rank < len(q))
        return out

    def per_owner(self) -> dict[str, int]:
        owners, queues = self._order(args=[PREFIX])
        return {o.decode(): len(q) for o, q in zip(owners, queues) if q}

    def job(self, job_id: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(key("job", job_id)).items()}

    def waiting_count(self) -> int:
        return int(self.r.scard(key("waiting")))

    def active_of(self, owner: Owner) -> list[str]:
        return sorted(m.decode() for m in self.r.smembers(key("active", owner_key(owner))))

    def running(self) -> list[str]:
        return sorted(m.decode() for m in self.r.smembers(key("running")))

