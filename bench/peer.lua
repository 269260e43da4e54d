-- The reference an nginx user would write instead of the module: ngx_lua
-- (Debian's libnginx-mod-http-lua) with lua-cjson, a cosocket Redis client
-- with keepalive, the same HMAC-SHA256 check over the raw body, and the same
-- transition script called once per report, the calls of one body
-- pipelined.  Used by bench/run
-- only (require("peer").handle()); keys use the prefix "peer:" so both can
-- share one Redis.
local ffi = require("ffi")
local cjson = require("cjson.safe")

ffi.cdef[[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *md,
                    unsigned int *md_len);
]]

local crypto = ffi.load("libcrypto.so.3")
local md = ffi.new("unsigned char[32]")
local mdlen = ffi.new("unsigned int[1]")

local SECRET = "bench-secret"
local PREFIX = "peer:"

local GROUPS = { ACCEPTED = "PENDING", PENDING = "PENDING",
                 UNDELIVERABLE = "UNDELIVERABLE", DELIVERED = "DELIVERED",
                 EXPIRED = "EXPIRED", REJECTED = "REJECTED" }

local function answer(status, t)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.print(t)
  return ngx.exit(status)
end

local function err(status, msg)
  return answer(status, '{"error":' .. cjson.encode(msg) .. '}')
end

local function to_hex(buf, n)
  local t = {}
  for i = 0, n - 1 do t[i + 1] = string.format("%02x", buf[i]) end
  return table.concat(t)
end

-- "2023-09-26T10:52:15.799+0000" as milliseconds since the epoch
local function ms(s)
  if type(s) ~= "string" then return "" end
  local y, mo, d, h, mi, se, frac, sign, oh, om =
    s:match("^(%d%d%d%d)-(%d%d)-(%d%d)T(%d%d):(%d%d):(%d%d)%.?(%d*)([+-])(%d%d):?(%d%d)$")
  if not y then return "" end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (mo + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  local off = (tonumber(oh) * 60 + tonumber(om)) * 60
  if sign == "-" then off = -off end
  local f = tonumber((frac .. "000"):sub(1, 3))
  return string.format("%d", ((days * 86400 + h * 3600 + mi * 60 + se) - off) * 1000 + f)
end

local function resp(args)
  local t = { "*", #args, "\r\n" }
  for _, a in ipairs(args) do
    t[#t + 1] = "$"; t[#t + 1] = #a; t[#t + 1] = "\r\n"
    t[#t + 1] = a; t[#t + 1] = "\r\n"
  end
  return table.concat(t)
end

-- the script answers one code per report: "*1" then the integer
local function read_reply(sock)
  local line, err = sock:receive("*l")
  if not line then return nil, err end
  local c = line:sub(1, 1)
  if c == ":" then return tonumber(line:sub(2)) end
  if c == "-" then return nil, line end
  if c == "+" then return line:sub(2) end
  if c == "*" and line == "*1" then return read_reply(sock) end
  if c == "$" then
    local n = tonumber(line:sub(2))
    if n < 0 then return ngx.null end
    local data = sock:receive(n + 2)
    return data and data:sub(1, n)
  end
  return nil, "unexpected reply " .. line
end

local M = {}

function M.handle()
  local REDIS = ngx.var.peer_redis
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    local f = ngx.req.get_body_file()
    if f then
      local fh = io.open(f, "rb"); body = fh:read("*a"); fh:close()
    end
  end
  body = body or ""

  local sig = ngx.req.get_headers()["X-Signature"]
  crypto.HMAC(crypto.EVP_sha256(), SECRET, #SECRET, body, #body, md, mdlen)
  local want = to_hex(md, mdlen[0])
  if type(sig) ~= "string" or #sig ~= #want then
    return err(401, "invalid signature")
  end
  local diff = 0
  sig = sig:lower()
  for i = 1, #want do
    diff = bit.bor(diff, bit.bxor(want:byte(i), sig:byte(i)))
  end
  if diff ~= 0 then return err(401, "invalid signature") end

  local doc = cjson.decode(body)
  if type(doc) ~= "table" or type(doc.results) ~= "table" then
    return err(400, "no results array")
  end

  local sha = ngx.var.peer_script_sha
  local now = string.format("%d", ngx.now() * 1000)
  local cmds, rejected = {}, {}

  for i, r in ipairs(doc.results) do
    local id = type(r) == "table" and r.messageId
    if type(id) ~= "string" or id == "" then
      rejected[#rejected + 1] = { index = i - 1, error = "missing messageId" }
    elseif type(r.status) == "table" then
      local g = GROUPS[tostring(r.status.groupName or ""):upper()]
      if not g then
        rejected[#rejected + 1] = { index = i - 1, error = "unknown status group" }
      else
        local at = r.doneAt and cjson.encode(r.doneAt) or "null"
        local ident = '{"kind":"delivery","id":' .. tostring(r.status.id or "null")
                      .. ',"at":' .. at .. ','
        -- the event's field and value (the time kept as text here)
        local field = '@d' .. tostring(r.status.id or "-")
                      .. (r.doneAt and (' ' .. r.doneAt) or '')
        local value = string.sub(g, 1, 1) .. '|' .. now
                      .. (r.status.name and ('|' .. r.status.name) or '')
        local err = type(r.error) == "table" and r.error or {}
        local key = PREFIX .. "msg:{" .. id .. "}"
        cmds[#cmds + 1] = resp({ "EVALSHA", sha, "1", key,
          now, "2592000", "1000000", "", "",
          key, "d", g, ident, field, id, r.callbackData or "", "", r.doneAt or "",
          r.status.name or "", err.name or "NO_ERROR",
          err.permanent == true and "true" or "false", ms(r.doneAt),
          PREFIX .. "events", value })
      end
    elseif type(r.seenAt) == "string" then
      local ident = '{"kind":"seen","at":' .. cjson.encode(r.seenAt) .. ','
      local key = PREFIX .. "msg:{" .. id .. "}"
      cmds[#cmds + 1] = resp({ "EVALSHA", sha, "1", key,
        now, "2592000", "1000000", "", "",
        key, "s", "SEEN", ident, '@s ' .. r.seenAt, id, r.callbackData or "",
        "", r.seenAt, "", "", "", "", PREFIX .. "events", 'S|' .. now })
    else
      rejected[#rejected + 1] = { index = i - 1,
                                  error = "neither a delivery nor a seen report" }
    end
  end

  local accepted, duplicates = 0, 0
  if #cmds > 0 then
    local sock = ngx.socket.tcp()
    -- the module's tiktok_reports_redis_timeout in bench/lib.sh
    sock:settimeout(5000)
    local ok
    if REDIS:sub(1, 5) == "unix:" then
      ok = sock:connect(REDIS)
    else
      ok = sock:connect("127.0.0.1", tonumber(REDIS))
    end
    if not ok then return err(503, "status store unavailable") end
    ok = sock:send(table.concat(cmds))
    if not ok then return err(503, "status store unavailable") end
    for _ = 1, #cmds do
      local v, e = read_reply(sock)
      if v == nil then
        sock:close()
        return err(503, "status store unavailable")
      end
      if v == 0 then duplicates = duplicates + 1 else accepted = accepted + 1 end
    end
    sock:setkeepalive(10000, 64)
  end

  local rej = {}
  for i, r in ipairs(rejected) do
    rej[i] = '{"index":' .. r.index .. ',"error":' .. cjson.encode(r.error) .. '}'
  end
  return answer(200, '{"accepted":' .. accepted .. ',"duplicates":' .. duplicates
                     .. ',"rejected":[' .. table.concat(rej, ",") .. ']}')
end

return M
