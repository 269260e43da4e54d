-- wrk script: POSTs signed Infobip TikTok delivery-report bodies whose
-- messageIds are new in every request, so Redis does first-time work.
--   REPORTS   results per body (default 1)
--   SECRET    HMAC-SHA256 secret (default bench-secret)
--   PATH_     location (default /webhook)
local ffi = require("ffi")

ffi.cdef[[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *md,
                    unsigned int *md_len);
]]

local crypto = ffi.load("libcrypto.so.3")
local reports = tonumber(os.getenv("REPORTS") or "1")
local secret = os.getenv("SECRET") or "bench-secret"
local path = os.getenv("PATH_") or "/webhook"
local md = ffi.new("unsigned char[64]")
local mdlen = ffi.new("unsigned int[1]")
local seq = 0
local prefix = ""

local head = '{"bulkId":"a28dd97c-2222-4fcf-99f1-0b557ed381da",'
  .. '"price":{"pricePerMessage":0.01,"currency":"EUR"},'
  .. '"status":{"groupId":3,"groupName":"DELIVERED","id":5,'
  .. '"name":"DELIVERED_TO_HANDSET","description":"Message delivered to handset"},'
  .. '"error":{"groupId":0,"groupName":"OK","id":0,"name":"NO_ERROR",'
  .. '"description":"No Error","permanent":false},"messageId":"'
local tail = '","to":"u5NkbnslAgxpOelvH01Y+rs7Uw=",'
  .. '"sender":"-000pcMJDSDHK-UvK012b10KKXmCvWmVF8o",'
  .. '"sentAt":"2023-09-26T10:52:15.457+0000",'
  .. '"doneAt":"2023-09-26T10:52:15.799+0000","messageCount":1,'
  .. '"platform":{"entityId":"promotional-traffic-entity",'
  .. '"applicationId":"marketing-automation-application"}}'

local function hex(buf, n)
  local t = {}
  for i = 0, n - 1 do t[#t + 1] = string.format("%02x", buf[i]) end
  return table.concat(t)
end

local threads = {}

function setup(thread)
  thread:set("tid", tostring(#threads + 1) .. "-" .. tostring(os.time()))
  table.insert(threads, thread)
end

-- The body is a fixed list of parts with the messageIds in between: only
-- the ids are new strings in each request, so building a 2000-report body
-- costs wrk little next to the server under test.
local parts = {}

function init(args)
  prefix = tid .. "-" .. tostring(math.random(1, 1e9))
  bad = 0
  for i = 1, reports do
    parts[3 * i - 2] = (i == 1 and '{"results":[' or ",") .. head
    parts[3 * i] = i == reports and tail .. "]}" or tail
  end
end

function request()
  seq = seq + 1
  local id = prefix .. "-" .. seq .. "-"
  for i = 1, reports do
    parts[3 * i - 1] = id .. i
  end
  local body = table.concat(parts)
  crypto.HMAC(crypto.EVP_sha256(), secret, #secret, body, #body, md, mdlen)
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/json",
    ["X-Signature"] = hex(md, mdlen[0]),
  }, body)
end

function response(status, headers, body)
  if status < 200 or status > 299 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + (t:get("bad") or 0) end
  io.write(string.format(
    "RESULT reports=%d requests=%d non200=%d rps=%.0f p50_ms=%.2f p99_ms=%.2f\n",
    reports, summary.requests, b + summary.errors.status,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
