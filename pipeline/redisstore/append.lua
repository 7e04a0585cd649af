-- Stores one chat message atomically in its room stream and its partition
-- bus, under one entry ID that is also the message's seq, unless the room
-- already holds the same send (idempotency).
--
-- KEYS[1] room stream     <prefix>:{pNN}:room:<room>
-- KEYS[2] partition bus   <prefix>:{pNN}:bus
-- KEYS[3] room epoch      <prefix>:{pNN}:epoch:<room>
-- KEYS[4] bus epoch       <prefix>:{pNN}:bus:epoch
-- KEYS[5] send record     <prefix>:{pNN}:sent:<room>:<hash of user, ref>
--         (absent when the message has no ref: it is never deduplicated)
-- ARGV[1] room MAXLEN (approximate), ARGV[2] bus MAXLEN (approximate)
-- ARGV[3] message UUID, ARGV[4] payload (text), ARGV[5] metadata (msgpack map)
-- ARGV[6] a fresh epoch, used for a room or bus that has none
-- ARGV[7] room TTL in ms (0: the room never expires)
-- ARGV[8] idempotency window in ms
--
-- Returns {seq, room epoch, message UUID, duplicate (0 or 1)}; for a
-- duplicate, the seq and UUID of the message stored the first time.
--
-- Epochs: a stream whose epoch key is missing, or whose epoch key outlived
-- the stream (the stream was deleted or lost), gets the fresh epoch. The
-- room stream and its epoch key share one TTL, refreshed here, so they
-- expire together; so after any loss the next message starts a new epoch.
--
-- The ID is generated here the way Redis generates `*` IDs (milliseconds of
-- the server clock, then a counter), but above the last ID of BOTH streams,
-- so it is valid in each and never goes backwards within an epoch, even if
-- the server's clock does. Every room entry is written by this script, so a
-- room's IDs are a subset of its bus's IDs, and a subscriber that knows the
-- seq of the last message it handled knows its position in the bus.

-- last_id returns the newest entry ID of a stream (0, 0 when it is empty).
-- Entries are only ever removed from the old end (MAXLEN trimming), so the
-- newest entry's ID is the stream's last generated ID.
local function last_id(key)
  local e = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #e == 0 then
    return 0, 0
  end
  local ms, seq = string.match(e[1][1], '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

-- epoch_of returns the epoch of stream, making a new one when it has none
-- or the stream is gone.
local function epoch_of(stream, key)
  local e = redis.call('GET', key)
  if e and redis.call('EXISTS', stream) == 1 then
    return e
  end
  redis.call('SET', key, ARGV[6])
  return ARGV[6]
end

local room_epoch = epoch_of(KEYS[1], KEYS[3])
epoch_of(KEYS[2], KEYS[4])

if #KEYS >= 5 then
  local rec = redis.call('GET', KEYS[5])
  if rec then
    -- {epoch, uuid, seq}; a record of an earlier epoch names a message
    -- that is lost, so the send is stored again.
    local ok, r = pcall(cmsgpack.unpack, rec)
    if ok and type(r) == 'table' and r[1] == room_epoch then
      return {r[3], room_epoch, r[2], 1}
    end
  end
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms, seq = last_id(KEYS[2])
local rms, rseq = last_id(KEYS[1])
if rms > ms or (rms == ms and rseq > seq) then
  ms, seq = rms, rseq
end
if now > ms then
  ms, seq = now, 0
else
  seq = seq + 1
end
local id = string.format('%.0f-%.0f', ms, seq)

local md = cmsgpack.unpack(ARGV[5])
md['seq'] = id
md['epoch'] = room_epoch
local packed = cmsgpack.pack(md)

redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id,
  '_watermill_message_uuid', ARGV[3], 'payload', ARGV[4], 'metadata', packed)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id,
  '_watermill_message_uuid', ARGV[3], 'payload', ARGV[4], 'metadata', packed)

if #KEYS >= 5 then
  redis.call('SET', KEYS[5], cmsgpack.pack({room_epoch, ARGV[3], id}), 'PX', ARGV[8])
end
if tonumber(ARGV[7]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[3])
end
return {id, room_epoch, ARGV[3], 0}
