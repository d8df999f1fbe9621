
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
 * first, and fails the batch with nothing charged.  Redis 6.2 or later.
 *
 * Written for Redis's cost, which the gateway's CPU pays when Redis runs
 * beside it.  Inside Redis a Lua instruction costs some 50 instructions, a
 * call of a C function (byte(), tonumber(), type(), format()) 500 to
 * 1,700, a new table or closure 600 to 1,500 and a SET about 12,000.  So
 * a request whose keys all take the guess (the usual case) costs a SET
 * and two table writes per key, and a few Lua instructions; all the rest
 * is on the paths of a key limited, hinted, of another type or not a TAT,
 * of a request denied, or of an error:
 * - a request of one limit of the first spec, without a hint ("\1", the
 *   usual one) has its spec known without a call of byte();
 * - no closures (they would be made at each run): the fix-up, the restore
 *   of a denied request and the undo of the batch are written out, an
 *   error breaks out of the loop to the undo (err, j);
 * - a key's result is written at once as the capacity used after the
 *   request, which is its answer when admitted on the guess; the fix-up
 *   pass (fix) finds the capacity used before it in U, a table made only
 *   for the keys whose TAT is in the future;
 * - the clock's text is TIME's seconds and microseconds, zero-padded to
 *   six digits (a concatenation, not a format()), its number that text's;
 *   the gateway's numbers are read by arithmetic (A[i] + 0, a third of
 *   the cost of tonumber()), old values with tonumber() (junk yields nil);
 * - the tables are made with room (constructors of nils: 16 results and
 *   old values, one spec): growing a table from empty costs more than the
 *   rest of a key's Lua; a spec is one table P[s] = {guess, its expiry,
 *   cost, burst capacity}, made whole by its constructor.
 * Old TATs are compared with now as strings (both 16 digits until 2286)
 * where that tells: tonumber() costs as much as the rest of a key's Lua.
 * A TAT is written as a string formatted with "%d": a Lua number as an
 * argument of redis.call() is formatted with "%.17g", slower.
 */

static ngx_str_t  ngx_http_rate_limit_lua = ngx_string(
    "local A, K, o, a0 = ARGV, KEYS, 0, 0\n"
    "if A[1] == 'c' then\n"
    "  K, o = A, 2\n"
    "  a0 = 2 + A[2]\n"
    "end\n"
    "local fmt, byte, sub = string.format, string.byte, string.sub\n"
    "local ceil, pcall = math.ceil, redis.pcall\n"
    "local t = redis.call('TIME')\n"
    "local snow = t[1] .. sub('00000', #t[2]) .. t[2]\n"
    "local now, ls = snow + 0, #snow\n"
    "local ns = A[a0 + 1] + 0\n"
    "local P = {nil}\n"
    "for s = 1, ns do\n"
    "  local c = A[a0 + 2 * s] + 0\n"
    "  local v = now + c\n"
    "  P[s] = {fmt('%d', v), fmt('%d', (ceil(v / 1000000) + 1) * 1000),\n"
    "          c, A[a0 + 2 * s + 1] + 0}\n"
    "end\n"
    "local res = {nil, nil, nil, nil, nil, nil, nil, nil,\n"
    "             nil, nil, nil, nil, nil, nil, nil, nil}\n"
    "local old = {nil, nil, nil, nil, nil, nil, nil, nil,\n"
    "             nil, nil, nil, nil, nil, nil, nil, nil}\n"
    "local k, err, j, U = 0\n"
    "for a = a0 + 2 * ns + 2, #A do\n"
    "  local spec, fix, deny = A[a]\n"
    "  local m = #spec\n"
    "  for i = k + 1, k + m do\n"
    "    local s, p, r = spec == '\\1' and 1 or byte(spec, i - k)\n"
    "    if s < 128 then\n"
    "      p = P[s]\n"
    "      r = pcall('SET', K[o + i], p[1], 'GET', 'PXAT', p[2])\n"
    "    else\n"
    "      p, fix, r = P[s - 128], true, pcall('GET', K[o + i])\n"
    "    end\n"
    "    local w = p[3]\n"
    "    if r and (#r ~= ls or r > snow) then\n"
    "      fix = true\n"
    "      if type(r) == 'table' then\n"
    "        if sub(r.err, 1, 9) ~= 'WRONGTYPE' then\n"
    "          err, j = r.err, i - 1\n"
    "          break\n"
    "        end\n"
    "        r = true\n"
    "      else\n"
    "        local v = tonumber(r)\n"
    "        if v and v > now and v < 1e17 then\n"
    "          U = U or {}\n"
    "          U[i] = v - now\n"
    "          w = w + U[i]\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    old[i], res[i] = r, w\n"
    "    if w > p[4] then fix, deny = true, true end\n"
    "  end\n"
    "  if fix then\n"
    "    if not err then\n"
    "      for i = k + 1, k + m do\n"
    "        local b, r, u = byte(spec, i - k), old[i], U and U[i] or 0\n"
    "        if deny then\n"
    "          res[i] = -1 - u\n"
    "        elseif u > 0 or r == true or b > 127 then\n"
    "          local v = now + u + P[b % 128][3]\n"
    "          res[i] = v - now\n"
    "          local e = fmt('%d', (ceil(v / 1000000) + 1) * 1000)\n"
    "          e = pcall('SET', K[o + i], fmt('%d', v), 'PXAT', e)\n"
    "          if e.err then\n"
    "            err, j = e.err, k + m\n"
    "            break\n"
    "          end\n"
    "          if r == true then old[i] = false end\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    if err or deny then\n"
    "      local i, lo = k + m, k + 1\n"
    "      if err then i, lo = j, 1 end\n"
    "      while i >= lo do\n"
    "        local r = old[i]\n"
    "        if r ~= true and (err or byte(spec, i - k) < 128) then\n"
    "          local v, e = r and tonumber(r)\n"
    "          if v and v >= 0 and v < 1e17 then\n"
    "            e = fmt('%d', (ceil(v / 1000000) + 1) * 1000)\n"
    "            e = pcall('SET', K[o + i], r, 'PXAT', e)\n"
    "          else\n"
    "            e = pcall('SET', K[o + i], '', 'PXAT', '1')\n"
    "          end\n"
    "          if e.err and not err then err, i, lo = e.err, k + m + 1, 1 end\n"
    "        end\n"
    "        i = i - 1\n"
    "      end\n"
    "      if err then return redis.error_reply(err) end\n"
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
