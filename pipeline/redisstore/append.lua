-- Stores one chat message atomically in its room stream and its partition
-- bus, under one entry ID that is also the message's seq.
--
-- KEYS[1] room stream   <prefix>:{pNN}:room:<room>
-- KEYS[2] partition bus <prefix>:{pNN}:bus
-- ARGV[1] room MAXLEN (approximate), ARGV[2] bus MAXLEN (approximate)
-- ARGV[3] message UUID, ARGV[4] payload (text), ARGV[5] metadata (msgpack map)
--
-- The ID is generated here the way Redis generates `*` IDs (milliseconds of
-- the server clock, then a counter), but above the last ID of BOTH streams,
-- so it is valid in each. Every room entry is written by this script, so a
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
local packed = cmsgpack.pack(md)

redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id,
  '_watermill_message_uuid', ARGV[3], 'payload', ARGV[4], 'metadata', packed)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id,
  '_watermill_message_uuid', ARGV[3], 'payload', ARGV[4], 'metadata', packed)
return id
