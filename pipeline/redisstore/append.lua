-- Stores chat messages, in order, each atomically in its room stream and its
-- partition's bus, under one entry ID that is also the message's seq, unless
-- its room already holds the same send (idempotency). One call takes the
-- messages of a batch that belong to one partition in a Redis Cluster (a
-- script's keys must share a slot), or the whole batch on a single Redis,
-- so the per-call costs (the script call itself, TIME, each bus's epoch: an
-- EXISTS, and its newest entry when pushing: an XREVRANGE after the
-- caller's last ID, each room's epoch and TTL: a PTTL and a GET) are paid
-- once per call, not once per message; a message costs one SET (its send
-- record, read and written at once: SET NX GET, Redis 7.0 or later), two
-- XADDs, and an SPUBLISH when pushing.
--
-- KEYS[2b-1]      bus b           <prefix>:{pNN}:bus           (b = 1..B)
-- KEYS[2b]        bus b's epoch   <prefix>:{pNN}:bus:epoch
-- KEYS[2B+2r-1]   room r's stream <prefix>:{pNN}:room:<room>   (r = 1..R)
-- KEYS[2B+2r]     room r's epoch  <prefix>:{pNN}:epoch:<room>
-- KEYS[2B+2R+k]   send records    <prefix>:{pNN}:sent:<room>:<hash of user, ref>
--
-- ARGV[1] room MAXLEN (approximate), ARGV[2] bus MAXLEN (approximate)
-- ARGV[3] room TTL in ms (0: rooms never expire)
-- ARGV[4] idempotency window in ms
-- ARGV[5] a fresh epoch: bus b's is ARGV[5] '.b' b, room r's ARGV[5] '.' r,
--         used by a stream that has none
-- ARGV[6] B, the number of buses; ARGV[7] R, the number of rooms
-- ARGV[8] '' not to push; else each stored entry is pushed on the shard
--         channel named like its bus key followed by ARGV[8] (see Pushes
--         below)
-- ARGV[8+r] the bus number b of room r (its partition's)
-- ARGV[8+R+b] the caller's last ID in bus b: the newest entry it knows the
--         bus holds (one it stored, or heard of), '' when it knows none:
--         when it is of the current millisecond, the bus's next ID is tried
--         above it, so that a call does not first try an ID already used
--         (see the IDs below); when pushing, the bus's newest entry is
--         looked for only after it, and the next ID tried above that
--         entry when there is one of this millisecond or later
-- then 5 arguments per message, in the order to store them, those of one
--   bus together and within them those of one room (a bus or a room that
--   comes back is stored the same, but read again):
--   room number r, send record number k (0: no ref, never deduplicated),
--   message UUID, payload (text), metadata: a msgpack map header counting
--   two entries more than follow it (the script appends seq and epoch).
--
-- Returns a flat array of strings: first R entries, room r's epoch ('' for a
-- room none of whose messages got as far as reading it), then one entry per
-- message: its seq when it was stored; '=' seq ' ' UUID when it is a
-- duplicate, with the seq and UUID stored the first time (in the room's
-- epoch: a record of another epoch is not a duplicate); '!' error for a
-- message that could not be stored (the others are). Seqs never start with
-- '=' or '!' nor contain a space.
--
-- Epochs: a stream whose epoch key is missing, or whose epoch key outlived
-- the stream (the stream was deleted or lost), gets the fresh epoch. The
-- room stream and its epoch key share one TTL, kept here for every room that
-- stored a message, so they expire together; so after any loss the next
-- message starts a new epoch.
--
-- The ID is generated here the way Redis generates `*` IDs (milliseconds of
-- the server clock, then a counter, kept per bus), but above the last ID of
-- BOTH streams, the room's and its bus's, so it is valid in each and never
-- goes backwards within an epoch, even if the server's clock does. The
-- last IDs are not read up front: an XADD of an ID at or below a stream's
-- last fails without effect, and only then is that stream's last ID read.
-- (When pushing, the bus's newest entry, read for the push, is above the
-- caller's last ID when another writer stored since; the next ID is then
-- tried above it.)
-- Every room entry is written by this script, so a room's IDs are a subset
-- of its bus's IDs, and a subscriber that knows the seq of the last message
-- it handled knows its position in the bus.
--
-- Pushes: with ARGV[8] not empty, each message stored is also published
-- (SPUBLISH) on the shard channel named like its bus key followed by
-- ARGV[8] (the database: channels are not per database), so in its slot,
-- as: prev ' ' seq ' ' #uuid ' ' #metadata ' ' uuid metadata payload,
-- where prev is the ID of the bus entry before it: its newest entry when
-- the call began ('0-0' for none), or the caller's last ID when the bus
-- holds nothing newer, even if that entry is gone (see the loop). A
-- subscriber that handled prev handles the push as the next entry; any
-- other prev tells it that it missed entries (a push lost with its
-- connection, or an entry stored by a writer that does not push), which it
-- then reads from the bus.

-- What the script costs Redis is mostly its commands. Of its own work,
-- what counts is what runs for every call and every message, and in
-- Redis's Lua a few things cost far more than the rest: a function or a
-- table is made anew on every call (about 2,000 machine instructions
-- each), a pcall costs 5,000; every new string is hashed byte by
-- byte (about 11 instructions a byte); a tonumber parses its string twice
-- (about 1,500), and a number turned into a string costs more. So the
-- script is one loop over the messages, which keeps the state of the bus
-- and the room at hand in locals (they come grouped), catches errors with
-- redis.pcall where a command can fail (an error reply is a table with an
-- err field, which no other reply has: indexing a string gives nil too, and
-- costs less than type), builds IDs from strings, and reads numbers once.

-- mpstr encodes s as a msgpack string.
local function mpstr(s)
  local n = #s
  if n < 32 then
    return string.char(0xa0 + n) .. s
  elseif n < 256 then
    return string.char(0xd9, n) .. s
  elseif n < 65536 then
    return string.char(0xda, math.floor(n / 256), n % 256) .. s
  end
  return string.char(0xdb, math.floor(n / 16777216), math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256) .. s
end

-- above returns the prefix and seq of the ID last (an entry's, or nil) when
-- it is above prefix .. seq, else prefix and seq.
local function above(last, prefix, seq)
  local lms, lseq = string.match(last or '', '^(%d+)-(%d+)$')
  if lms then
    lms, lseq = tonumber(lms), tonumber(lseq)
    local ms = tonumber(string.sub(prefix, 1, -2))
    if lms > ms or (lms == ms and lseq > seq) then
      return string.format('%.0f-', lms), lseq
    end
  end
  return prefix, seq
end

-- follow returns the next ID to try in a bus whose last ID used is prefix
-- .. seq (see below), above stream's last ID. Unless full, that is the ID
-- of its newest entry (XREVRANGE … COUNT 1, which costs Redis about half
-- of XINFO STREAM with its two entries). With full it is the last one the
-- stream generated (XINFO STREAM's last-generated-id), which is above its
-- newest entry when its newest entries were deleted (this script deletes
-- the bus entry of a message it could not store in its room): a caller
-- whose XADD above the newest entry is refused again asks with full. It
-- returns the ID's prefix and seq, and the ID.
local function follow(stream, prefix, seq, full)
  local last
  if full then
    local info = redis.call('XINFO', 'STREAM', stream)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        last = info[i + 1]
        break
      end
    end
  else
    local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', '1')
    last = newest[1] and newest[1][1]
  end
  prefix, seq = above(last, prefix, seq)
  return prefix, seq + 1, prefix .. (seq + 1)
end

local t = redis.call('TIME')

-- The current millisecond as an ID's prefix, from TIME's own strings: the
-- seconds, then the microseconds' first three of six digits.
local now_prefix = t[1] .. string.sub('00000' .. t[2], -6, -4) .. '-'

-- (Arithmetic turns a string into a number at half a tonumber's cost.)
local nbuses, nrooms, ttl = ARGV[6] + 0, ARGV[7] + 0, ARGV[3] + 0
local push = ARGV[8] ~= ''

-- The reply: the rooms' epochs ('' until a room is read), then the
-- messages' entries.
local reply = {}
for r = 1, nrooms do
  reply[r] = ''
end
local n = nrooms

-- The bus at hand: its number as in ARGV (bno), key, the error that fails
-- its messages when it could not be read, the prev of its next push (read
-- only when pushing), and prefix .. seq: the last ID used in it, or a bound
-- below the next one to try (seq -1: the next is prefix .. '0'; prefix is
-- the ID's milliseconds and '-'). IDs start in the current millisecond,
-- above the caller's last ID there (ARGV), or above the bus's newest entry
-- when one was read (for a push) of this millisecond or later. The bus's
-- last ID is not read otherwise unless an XADD finds it higher (another
-- caller stored since, or the clock went back), and a
-- room's only if its stream is ahead of its bus (it was lost, or written by
-- hand). bus_last is the last ID the call stored in it, and left[b] the
-- last one it stored in bus b before turning to another (made only then):
-- a bus that comes back takes up from there.
local bno, key, bus_err, prev, prefix, seq, bus_last, left
-- The room at hand: its number as in ARGV (rno; false before the first),
-- stream, epoch key, the error that fails its messages when it could not
-- be read, epoch, whether it is fresh, the stream's PTTL (-2: none), the
-- start of a send record (a msgpack array header and the epoch), the end of
-- an entry's metadata without the seq (the epoch entry and the seq's key),
-- whether it stored a message, and whether it was checked against its bus.
local rno, stream, ekey, room_err, epoch, fresh, pttl, rec_head, md_tail, stored, checked = false

-- One round more than there are messages, with ARGV[a] nil, finishes the
-- last room.
for a = 9 + nrooms + nbuses, #ARGV + 1, 5 do
  local this_room = ARGV[a]
  if this_room ~= rno then
    -- Every room that stored a message outlives it by at least 99% of the
    -- TTL: its TTL is set again once it has run down by 1% (so a busy room
    -- costs no write here; its PTTL was read when it came to hand).
    if stored then
      if ttl > 0 then
        if fresh or pttl < ttl - ttl / 100 then
          redis.call('PEXPIRE', stream, ttl)
          redis.call('PEXPIRE', ekey, ttl)
        end
      elseif pttl ~= -1 or redis.call('PTTL', ekey) ~= -1 then
        redis.call('PERSIST', stream)
        redis.call('PERSIST', ekey)
      end
    end
    if not this_room then
      break
    end
    rno, room_err, stored, checked = this_room, nil, false, false
    local r = this_room + 0
    local this_bus = ARGV[8 + r]
    if this_bus ~= bno then
      if bus_last then
        left = left or {}
        left[bno] = bus_last
      end
      bno, bus_last = this_bus, nil
      local b = this_bus + 0
      key = KEYS[2 * b - 1]
      -- The bus's epoch is kept, not read: one EXISTS of both keys tells
      -- whether it stands.
      local stands = redis.call('EXISTS', key, KEYS[2 * b]) == 2
      if not stands then
        redis.call('SET', KEYS[2 * b], ARGV[5] .. '.b' .. b)
      end
      local own = left and left[this_bus]
      local last = own or ARGV[8 + nrooms + b]
      bus_err, prev, prefix, seq = nil, '0-0', now_prefix, -1
      if push then
        -- A push names the bus's newest entry. Where the bus stands and
        -- the caller knows an entry of it, that is usually the caller's
        -- last ID (an instance stores each partition's messages from one
        -- batcher, and hears of the others' from its subscription), so
        -- only an entry after it is asked for: none, usually, and an
        -- empty reply costs Redis a third of what the entry does. With
        -- none, the last ID is named even if its entry is gone (deleted,
        -- or lost in a failover): a subscriber that handled it takes the
        -- push as next, and one at the newest entry left reads the bus
        -- after it, which holds nothing before this push; either way it
        -- gets what it got when the newest entry was named.
        local newest
        if stands and last ~= '' then
          prev = last
          newest = redis.pcall('XREVRANGE', key, '+', '(' .. last, 'COUNT', '1')
        else
          newest = redis.pcall('XREVRANGE', key, '+', '-', 'COUNT', '1')
        end
        if newest.err then
          bus_err = newest.err
        elseif newest[1] then
          prev = newest[1][1]
        end
      end
      -- The next ID is tried above the newest entry the caller knows the
      -- bus holds, when that is of this millisecond or later (an older
      -- one is below now anyway), so that no XADD is first refused on an
      -- ID already taken and the bus is not followed: the bus's newest
      -- entry after the caller's last ID, read for the push (another
      -- writer's), else the caller's last ID. An ID of a later
      -- millisecond (a bus ahead of the clock: the clock went back) is
      -- used only when it was read from the bus, or stored by this call:
      -- the caller's may be that of a bus that was lost, whose new
      -- epoch must not take up the lost one's clock (nor name it as a
      -- push's prev entry; one of this millisecond only raises the next
      -- ID). The usual cases cost little: an ID of this millisecond is
      -- read from its digits, and one of an earlier millisecond is told
      -- by a string comparison (IDs of this century have 13 digits
      -- before the '-', which any collation orders as numbers; one that
      -- says otherwise only costs above's exact comparison, or a
      -- follow).
      local known = prev
      if known == '0-0' then
        known = last
      end
      if string.sub(known, 1, #now_prefix) == now_prefix then
        local kseq = string.match(known, '^%d+$', #now_prefix + 1)
        if kseq then
          seq = tonumber(kseq)
        end
      elseif (known ~= last or own) and not (known < now_prefix) then
        prefix, seq = above(known, prefix, seq)
      end
    end
    if not bus_err then
      stream, ekey = KEYS[2 * nbuses + 2 * r - 1], KEYS[2 * nbuses + 2 * r]
      pttl = redis.call('PTTL', stream)
      -- A stream with no epoch, or gone, gets a fresh one (ARGV[5] '.' r).
      epoch = pttl ~= -2 and redis.pcall('GET', ekey)
      if epoch and epoch.err then
        room_err = epoch.err
      else
        fresh = not epoch
        if fresh then
          epoch = ARGV[5] .. '.' .. r
          redis.call('SET', ekey, epoch)
          if ttl > 0 then
            -- Expires even if none of the room's messages is stored
            -- (renewed above for a room that stored one).
            redis.call('PEXPIRE', ekey, ttl)
          end
        end
        reply[r] = epoch
        local mp = mpstr(epoch)
        rec_head, md_tail = '\147' .. mp, '\165epoch' .. mp .. '\163seq'
      end
    end
  end

  local res = bus_err or room_err
  if res then
    res = '!' .. res
  else
    seq = seq + 1
    local id
    if seq == 0 then
      id = prefix .. '0'
    else
      id = prefix .. seq
    end
    local uuid, payload, md0 = ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
    -- (mpstr's first case, without the call, for what runs per message)
    local mid = #id < 32 and string.char(0xa0 + #id) .. id or mpstr(id)
    local sent, head, recorded
    if ARGV[a + 1] ~= '0' then
      -- The record is {epoch, uuid, seq} (rec_head, head, mid). One SET
      -- both reads an earlier record and, when there is none, writes
      -- this one.
      sent = KEYS[2 * nbuses + 2 * nrooms + ARGV[a + 1]]
      head = mpstr(uuid)
      local rec = redis.pcall('SET', sent, rec_head .. head .. mid, 'NX', 'GET', 'PX', ARGV[4])
      recorded = id
      if rec and rec.err then
        sent, res = nil, '!' .. rec.err
      elseif rec then
        -- A record of an earlier epoch names a message that is lost, so
        -- the send is stored again (and so is one of a record that is not
        -- this script's).
        local ok, p = pcall(cmsgpack.unpack, rec)
        if ok and type(p) == 'table' and p[1] == epoch and type(p[2]) == 'string' and type(p[3]) == 'string' then
          seq = seq - 1 -- id is not used
          res = '=' .. p[3] .. ' ' .. p[2]
        else
          redis.call('SET', sent, rec_head .. head .. mid, 'PX', ARGV[4])
        end
      end
    end

    if not res then
      -- An XADD of an ID at or below the stream's last is refused and
      -- changes nothing; only then is the stream's last ID read (follow:
      -- its newest entry first, then, if refused again, the last ID it
      -- generated).
      local md = md0 .. md_tail .. mid
      local xa = redis.pcall('XADD', key, 'MAXLEN', '~', ARGV[2], id,
        '_watermill_message_uuid', uuid, 'payload', payload, 'metadata', md)
      local tries = 0
      while tries < 2 and xa.err and string.find(xa.err, 'equal or smaller', 1, true) do
        tries = tries + 1
        prefix, seq, id = follow(key, prefix, seq, tries == 2)
        md = md0 .. md_tail .. mpstr(id)
        xa = redis.pcall('XADD', key, 'MAXLEN', '~', ARGV[2], id,
          '_watermill_message_uuid', uuid, 'payload', payload, 'metadata', md)
      end
      if not xa.err then
        xa = redis.pcall('XADD', stream, 'MAXLEN', '~', ARGV[1], id,
          '_watermill_message_uuid', uuid, 'payload', payload, 'metadata', md)
        if xa.err and not checked and string.find(xa.err, 'equal or smaller', 1, true) then
          -- The room is ahead of the bus: store in both above it.
          redis.call('XDEL', key, id)
          prefix, seq, id = follow(stream, prefix, seq, true)
          md = md0 .. md_tail .. mpstr(id)
          xa = redis.pcall('XADD', key, 'MAXLEN', '~', ARGV[2], id,
            '_watermill_message_uuid', uuid, 'payload', payload, 'metadata', md)
          if not xa.err then
            xa = redis.pcall('XADD', stream, 'MAXLEN', '~', ARGV[1], id,
              '_watermill_message_uuid', uuid, 'payload', payload, 'metadata', md)
          end
        end
        checked = true
        if xa.err then
          -- Nothing of the message stays: none is delivered without
          -- history.
          redis.call('XDEL', key, id)
        end
      end
      if xa.err then
        if sent then
          redis.call('DEL', sent)
        end
        res = '!' .. xa.err
      else
        stored, bus_last = true, id
        if sent and recorded ~= id then
          redis.call('SET', sent, rec_head .. head .. mpstr(id), 'PX', ARGV[4])
        end
        if push then
          redis.call('SPUBLISH', key .. ARGV[8], prev .. ' ' .. id .. ' ' .. #uuid .. ' ' .. #md .. ' ' .. uuid .. md .. payload)
          prev = id
        end
        res = id
      end
    end
  end
  n = n + 1
  reply[n] = res
end
return reply
