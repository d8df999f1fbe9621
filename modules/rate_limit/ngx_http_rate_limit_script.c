
/*
 * Copyright (C) meshgate contributors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_rate_limit.h"


/*
 * GCRA on Redis's clock, for a batch of requests, each atomically over
 * all its limits.  KEYS: one per limit of each request, in order.  ARGV:
 * the number of specs, the specs (per spec: the capacity a request takes,
 * interval * cost, and the burst capacity, (burst + 1) * interval, both in
 * microseconds), then per request a string whose bytes are the numbers of
 * the specs of its limits.  Either every limit of a request admits it and
 * all are charged, or none is.  Returns one integer per limit: the
 * capacity used (TAT - now, in microseconds) after the request when it
 * was charged, or -1 - the capacity used before it when it was not; the
 * gateway works out the rest (ngx_http_rate_limit_result()).  TATs (about
 * 2^51 us) are exact in Lua's doubles.  With Redis Cluster the keys, of
 * several slots of one node, are not declared (Redis refuses declared
 * keys of several slots): ARGV starts with "c", the number of keys and
 * the keys (see ngx_http_rate_limit_batch_send()).
 *
 * One command per key: each key is written first with the TAT it gets if
 * its TAT is in the past, now + the request's cost, and read by the same
 * command (SET key guess GET PXAT expiry).  A key that is not being
 * limited has its TAT in the past, and the guess is right.  Otherwise the
 * key is written again once the request is decided: with its TAT moved on
 * if the request is admitted, with its old value back if not, or deleted
 * if it had none (a SET that expires at once: no DEL, which the users of
 * rate_limit_redis were never asked to allow).  A key expires at the end
 * of the second after the one its TAT falls in: never while it counts,
 * and restoring a TAT restores its expiry exactly.  Reading every key
 * (MGET, or one GET per key with Redis Cluster) then writing those
 * charged took one more command per key, and Redis's cost per request is
 * mostly its cost per command.
 *
 * A request denied costs two writes per key (the guess and its undo),
 * where reading first cost a share of one read: under a flood on a key,
 * Redis would do twice the work per request.  The worker therefore
 * remembers the keys it saw limited (ngx_http_rate_limit_hint()) and
 * marks them in the spec bytes (+128): the script reads those first (GET)
 * and writes them only if the request is admitted.  A wrong hint costs
 * one more command, never a wrong answer.
 *
 * A key of another type is taken as empty (SET GET refuses it and writes
 * nothing) and overwritten if the request is charged, so that it cannot
 * fail the other requests of its batch; a value that is not a TAT is
 * taken as empty.  Any other error (with Redis Cluster: a key not on this
 * node, of a slot being migrated) undoes the batch's writes, newest
 * first, and fails the batch with nothing charged.  Old TATs are compared
 * with now as strings (both 16 digits until 2286) where that tells:
 * tonumber() costs as much as the rest of a key's Lua.  A TAT is written
 * as a string formatted with "%d": a Lua number as an argument of
 * redis.call() is formatted with "%.17g", slower.  Redis 6.2 or later.
 */

static ngx_str_t  ngx_http_rate_limit_lua = ngx_string(
    "local K, o, n = KEYS, 0, #KEYS\n"
    "if ARGV[1] == 'c' then\n"
    "  K, o, n = ARGV, 2, tonumber(ARGV[2])\n"
    "end\n"
    "local a0 = (o > 0) and (o + n) or 0\n"
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000000 + t[2]\n"
    "local ceil, fmt, byte = math.ceil, string.format, string.byte\n"
    "local sub, pcall = string.sub, redis.pcall\n"
    "local function px(v)\n"
    "  return fmt('%d', (ceil(v / 1000000) + 1) * 1000)\n"
    "end\n"
    "local function num(r)\n"
    "  local v = r and tonumber(r)\n"
    "  if v and v >= 0 and v < 1e17 then return v end\n"
    "end\n"
    "local snow = fmt('%d', now)\n"
    "local ns = tonumber(ARGV[a0 + 1])\n"
    "local inc, cap, gv, gp = {}, {}, {}, {}\n"
    "for s = 1, ns do\n"
    "  inc[s] = tonumber(ARGV[a0 + 2 * s])\n"
    "  cap[s] = tonumber(ARGV[a0 + 2 * s + 1])\n"
    "  gv[s] = fmt('%d', now + inc[s])\n"
    "  gp[s] = px(now + inc[s])\n"
    "end\n"
    "local res, old, k = {}, {}, 0\n"
    "local function put(key, r)\n"
    "  local v, e = num(r)\n"
    "  if v then\n"
    "    e = pcall('SET', key, r, 'PXAT', px(v))\n"
    "  else\n"
    "    e = pcall('SET', key, '', 'PXAT', '1')\n"
    "  end\n"
    "  return type(e) == 'table' and e.err\n"
    "end\n"
    "local function undo(j, err)\n"
    "  for i = j, 1, -1 do\n"
    "    if old[i] ~= true then put(K[o + i], old[i]) end\n"
    "  end\n"
    "  return redis.error_reply(err)\n"
    "end\n"
    "for a = a0 + 2 * ns + 2, #ARGV do\n"
    "  local spec, ok = ARGV[a], true\n"
    "  local m = #spec\n"
    "  for i = k + 1, k + m do\n"
    "    local s, r = byte(spec, i - k)\n"
    "    if s > 127 then\n"
    "      s, r = s - 128, pcall('GET', K[o + i])\n"
    "    else\n"
    "      r = pcall('SET', K[o + i], gv[s], 'GET', 'PXAT', gp[s])\n"
    "    end\n"
    "    local u = 0\n"
    "    if type(r) == 'table' then\n"
    "      if sub(r.err, 1, 9) ~= 'WRONGTYPE' then\n"
    "        return undo(i - 1, r.err)\n"
    "      end\n"
    "      r = true\n"
    "    elseif r and (#r ~= #snow or r >= snow) then\n"
    "      u = (num(r) or 0) - now\n"
    "      if u < 0 then u = 0 end\n"
    "    end\n"
    "    old[i], res[i] = r, u\n"
    "    if u + inc[s] > cap[s] then ok = false end\n"
    "  end\n"
    "  for i = k + 1, k + m do\n"
    "    local u, s = res[i], byte(spec, i - k)\n"
    "    if ok then\n"
    "      local v = now + u + inc[s % 128]\n"
    "      res[i] = v - now\n"
    "      if u > 0 or old[i] == true or s > 127 then\n"
    "        local e = pcall('SET', K[o + i], fmt('%d', v), 'PXAT', px(v))\n"
    "        if e.err then return undo(k + m, e.err) end\n"
    "        if old[i] == true then old[i] = false end\n"
    "      end\n"
    "    else\n"
    "      res[i] = -1 - u\n"
    "    end\n"
    "  end\n"
    "  for i = ok and 0 or k + m, k + 1, -1 do\n"
    "    if old[i] ~= true and byte(spec, i - k) < 128 then\n"
    "      local e = put(K[o + i], old[i])\n"
    "      if e then return undo(k + m, e) end\n"
    "    end\n"
    "  end\n"
    "  k = k + m\n"
    "end\n"
    "return res\n");


/* the script, for the redis directive */

ngx_meshgate_redis_script_t *
ngx_http_rate_limit_script(ngx_conf_t *cf)
{
    return ngx_meshgate_redis_script(cf, &ngx_http_rate_limit_lua);
}
