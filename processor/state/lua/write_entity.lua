-- Atomically write the changed fields of several entities, each with its offset watermarks.
-- KEYS[i]  the state hash of entity i
-- ARGV[1]  JSON array, one entry per entity in KEYS order: [marks, fields, lengths, deletes]
--            marks    [field, offset, ...]: the watermarks this write advances (offsets as text)
--            fields   the fields to set, their values cut from ARGV[2] by ...
--            lengths  ... the byte length of each value, in ``fields`` order
--            deletes  the fields to delete
-- ARGV[2]  the values to set of every entity, concatenated in order.
-- Values travel as plain bytes, not as JSON strings inside the JSON header: escaping a stored
-- JSON document inside another, and decoding that here, cost more on both sides than cutting.
-- An entity whose stored watermark is already at or past a new one is left untouched: the
-- writer is a fenced-off former owner of the partition (or its retried write landed before).
-- Returns the 1-based positions of those refused entities.
local header = cjson.decode(ARGV[1])
local payload = ARGV[2]
local sub = string.sub
local refused = {}
local at = 1  -- position in the payload of the next value
for i, key in ipairs(KEYS) do
  local entry = header[i]
  local marks, fields, lengths, deletes = entry[1], entry[2], entry[3], entry[4]
  local fresh = true
  for j = 1, #marks - 1, 2 do
    local cur = redis.call('HGET', key, marks[j])
    if cur and tonumber(cur) >= tonumber(marks[j + 1]) then
      fresh = false
      break
    end
  end
  if fresh then
    local sets = {}
    for j = 1, #marks do
      sets[j] = marks[j]
    end
    local n = #sets
    for j = 1, #fields do
      local len = lengths[j]
      sets[n + 1] = fields[j]
      sets[n + 2] = sub(payload, at, at + len - 1)
      n = n + 2
      at = at + len
    end
    if #deletes > 0 then
      redis.call('HDEL', key, unpack(deletes))
    end
    if n > 0 then
      redis.call('HSET', key, unpack(sets))
    end
  else
    for j = 1, #lengths do
      at = at + lengths[j]
    end
    refused[#refused + 1] = i
  end
end
return refused
