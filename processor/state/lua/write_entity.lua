-- Atomically write one entity's changed fields together with its offset watermarks.
-- KEYS[1]  the entity state hash
-- ARGV[1]  n = number of watermark pairs that follow
-- ARGV[2 .. 1+2n]  watermark field, offset  (pairs)
-- ARGV[2+2n]       JSON object {field: value}: the changed fields (a JSON null deletes the
--                  field). One argument instead of a pair per field: packing arguments is what
--                  the client spends its time on, decoding one JSON document is cheap here.
-- Returns 1 when written, 0 when a stored watermark is already at or past a new one: the
-- caller is a fenced-off former owner of the partition and must drop its cached state.
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local cur = redis.call('HGET', KEYS[1], ARGV[2 + 2 * i])
  if cur and tonumber(cur) >= tonumber(ARGV[3 + 2 * i]) then
    return 0
  end
end
local sets = {}
for i = 2, 1 + 2 * n do
  sets[#sets + 1] = ARGV[i]
end
local changed = cjson.decode(ARGV[2 + 2 * n])
local deletes = {}
for field, value in pairs(changed) do
  if value == cjson.null then
    deletes[#deletes + 1] = field
  else
    sets[#sets + 1] = field
    sets[#sets + 1] = value
  end
end
if #deletes > 0 then
  redis.call('HDEL', KEYS[1], unpack(deletes))
end
if #sets > 0 then
  redis.call('HSET', KEYS[1], unpack(sets))
end
return 1
