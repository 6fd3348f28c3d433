-- Atomically write the changed fields of several entities, each with its offset watermarks.
-- KEYS[i]  the state hash of entity i
-- ARGV, for each entity in KEYS order:
--   n                       the number of watermark pairs that follow
--   field, offset (n times) the watermarks this write advances
--   JSON object             {field: value}: the changed fields (a JSON null deletes the field).
--                           One argument instead of a pair per field: packing arguments is what
--                           the client spends its time on, decoding one JSON document is cheap here.
-- An entity whose stored watermark is already at or past a new one is left untouched: the
-- writer is a fenced-off former owner of the partition (or its retried write landed before).
-- Returns the 1-based positions of those refused entities.
local refused = {}
local at = 1
for i, key in ipairs(KEYS) do
  local n = tonumber(ARGV[at])
  local first = at + 1
  local payload = ARGV[first + 2 * n]
  at = first + 2 * n + 1
  local fresh = true
  for j = first, first + 2 * n - 2, 2 do
    local cur = redis.call('HGET', key, ARGV[j])
    if cur and tonumber(cur) >= tonumber(ARGV[j + 1]) then
      fresh = false
      break
    end
  end
  if fresh then
    local sets = {}
    for j = first, first + 2 * n - 1 do
      sets[#sets + 1] = ARGV[j]
    end
    local deletes = {}
    for field, value in pairs(cjson.decode(payload)) do
      if value == cjson.null then
        deletes[#deletes + 1] = field
      else
        sets[#sets + 1] = field
        sets[#sets + 1] = value
      end
    end
    if #deletes > 0 then
      redis.call('HDEL', key, unpack(deletes))
    end
    if #sets > 0 then
      redis.call('HSET', key, unpack(sets))
    end
  else
    refused[#refused + 1] = i
  end
end
return refused
